r"""``iexact bench batch-size``: the largest mini-batch whose activations fit a budget, FP32 beside compressed.

A batch size :math:`B` (seed nodes of a ``neighbor`` batch, nodes of a
``random-node`` part) costs the largest :func:`iexact.activation_memory` of
the first ``samples`` batches its loader draws (under the run's seed, so
every configuration sees the same batches). That grows with :math:`B`, so
doubling and then bisecting finds the largest batch size within the
budget, to 1 % (or one node), from :data:`SMALLEST` up: the batch sizes a given device memory allows,
FP32 against each compressed config.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from ..memory import activation_memory
from .batching import Batching, make_loader
from .data import graph_of
from .measure import fork_rng
from .models import prepare_model
from .settings import Settings

SMALLEST = 2  # batch normalization needs two rows in training


@dataclasses.dataclass(frozen=True)
class LargestBatch:
    """The largest batch size found within the budget (``batch_size`` 0: not even :data:`SMALLEST` fits)."""

    label: str
    batch_size: int
    activation_bytes: int  # of the costliest sampled batch at ``batch_size``
    nodes: int  # nodes of that batch's subgraph
    limit: int  # the largest batch size the data allows (training nodes, or all nodes for random-node parts)
    probes: int  # batch sizes measured


def _cost(model, batching: Batching, seed: int, data, device, batch_size: int, samples: int) -> tuple[int, int]:
    """``(bytes, nodes)`` of the costliest of the first ``samples`` batches of ``batch_size``."""
    batching = dataclasses.replace(batching, batch_size=batch_size)
    worst = (0, 0)
    with fork_rng(device):
        torch.manual_seed(seed)
        for batch in itertools.islice(make_loader(data, batching), samples):
            batch = batch.to(device)
            nbytes = activation_memory(model, batch.x, graph_of(batch)).total
            worst = max(worst, (nbytes, batch.num_nodes))
    return worst


def largest_batch(
    label: str, settings: Settings, data, device: torch.device, budget: int, samples: int = 3
) -> LargestBatch:
    """The largest batch size of ``settings`` (its ``batching`` says the sampler
    and fanout) whose activations fit ``budget`` bytes."""
    batching = settings.batching
    if batching is None:
        raise ValueError("largest_batch searches mini-batch sizes: give settings with a batching")
    limit = int(data.train_mask.sum()) if batching.sampler == "neighbor" else data.num_nodes
    with fork_rng(device):
        torch.manual_seed(settings.seed)
        model = prepare_model(settings, data, device)
    probes = 0
    measured: dict[int, tuple[int, int]] = {}

    def fits(batch_size: int) -> bool:
        nonlocal probes
        probes += 1
        measured[batch_size] = _cost(model, batching, settings.seed, data, device, batch_size, samples)
        return measured[batch_size][0] <= budget

    smallest = min(SMALLEST, limit)
    if not fits(smallest):
        return LargestBatch(label, 0, *measured[smallest], limit, probes)
    low, high = smallest, None  # low fits; high (when known) does not
    while high is None and low < limit:
        candidate = min(2 * low, limit)
        if fits(candidate):
            low = candidate
        else:
            high = candidate
    while high is not None and high - low > max(1, low // 100):
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return LargestBatch(label, low, *measured[low], limit, probes)


def batch_size_table(results: list[LargestBatch], budget_text: str) -> str:
    """Markdown: per config, the largest batch size within the budget and its ratio to FP32's."""
    reference = next((result.batch_size for result in results if result.label == "fp32"), None)
    lines = [
        f"| config | largest batch size within {budget_text} (all: every node the sampler can take) | "
        f"vs FP32 | its subgraph (nodes) | activation memory | batch sizes measured |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        size = f"{result.batch_size:,}" + (" (all)" if result.batch_size == result.limit else "")
        ratio = (
            "–"
            if not reference or not result.batch_size
            else (("≥ " if result.batch_size == result.limit else "") + f"{result.batch_size / reference:.1f}×")
        )
        lines.append(
            f"| {result.label} | {size} | {ratio} | {result.nodes:,} | "
            f"{result.activation_bytes / 2**20:.2f} MiB | {result.probes} |"
        )
    return "\n".join(lines)
