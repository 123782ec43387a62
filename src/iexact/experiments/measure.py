r"""What a run measures besides accuracy: activation memory, the gradient
error at initialization, the peak memory, and where that peak goes.

Each measurement leaves torch's random streams as they were (:func:`fork_rng`),
so measuring never changes what trains.
"""

from __future__ import annotations

import resource
import sys

import torch

from ..analysis import gradient_error
from ..memory import activation_memory, allocator_growth
from .batching import batch_loss_rows, make_loader
from .data import graph_of
from .limits import is_out_of_memory, peak_resident, restart_peak_resident
from .models import prepare_model
from .precision import autocast
from .settings import Settings
from .train import labels_of, loss_function


def fork_rng(device: torch.device):
    """``torch.random.fork_rng`` of the CPU generator and ``device``'s."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def sample_batch(settings: Settings, data, device: torch.device):
    """What one training step sees: ``data`` itself in full batch, else the
    first batch of the settings' loader (drawn without touching torch's RNG streams)."""
    if settings.batching is None:
        return data
    with fork_rng(device):
        torch.manual_seed(settings.seed)
        return next(iter(make_loader(data, settings.batching))).to(device)


def measure_memory(settings: Settings, data, device: torch.device) -> dict:
    """Activation memory of one training forward (on one batch in mini-batch
    training, under the settings' autocast), without touching torch's RNG streams."""
    batch = sample_batch(settings, data, device)
    with fork_rng(device):
        model = prepare_model(settings, data, device)
        with autocast(settings.precision, device):
            report = activation_memory(model, batch.x, graph_of(batch))
            grown = _allocator_count(model, batch)
    return {
        "total": report.total,
        "compressed": report.compressed,
        "uncompressed": report.uncompressed,
        "allocator": grown,
        "layers": [
            {"name": layer.name, "type": layer.kind, "compressed": layer.compressed, "uncompressed": layer.uncompressed}
            for layer in report.layers
        ],
    }


def _allocator_count(model, batch) -> int | None:
    """:func:`~iexact.memory.allocator_growth` of one training forward, or ``None``
    where it does not fit: on CPU the profiler behind it holds a record of every
    op, which a run at the edge of ``--memory-limit`` may not have room for."""
    try:
        return allocator_growth(model, batch.x, graph_of(batch))
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        return None


def measure_gradient_error(settings: Settings, data, device: torch.device, draws: int = 4) -> dict | None:
    """:func:`iexact.gradient_error` of the settings' config on the model as run 1
    initializes it (the training loss on the training nodes), without touching
    torch's RNG streams; ``None`` for FP32 and checkpointing. It runs the FP32
    model too, so it must come after the peak memory is read."""
    if settings.config is None:
        return None
    batch = sample_batch(settings, data, device)
    labels = labels_of(batch)
    rows = batch.train_mask.nonzero().view(-1) if settings.batching is None else batch_loss_rows(batch)
    with fork_rng(device):
        torch.manual_seed(settings.seed)
        model = prepare_model(settings, data, device)
        with autocast(settings.precision, device):  # against the model under the same autocast
            error = gradient_error(
                model, batch.x, graph_of(batch), draws=draws, loss_fn=lambda out: loss_function(out[rows], labels[rows])
            )
    return {"whole": error.whole, "of_mean": error.of_mean, "draws": error.draws, "per_parameter": error.per_parameter}


def restart_peak_memory(device: torch.device) -> bool:
    """Start counting the peak afresh (before training, after the data is
    loaded): CUDA's peak statistics, or on CPU the peak resident set where
    Linux allows; ``False`` where the CPU peak cannot be restarted."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return restart_peak_resident()


def peak_memory(device: torch.device, restarted: bool = False) -> tuple[int, str]:
    """Peak bytes and how they were measured: CUDA ``max_memory_allocated``;
    on CPU the peak resident set since :func:`restart_peak_memory`
    (``cpu_peak_rss``) or, where it could not restart, the process's whole
    life's (``cpu_peak_rss_process``, loading the data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    since = peak_resident() if restarted else None
    if since is not None:
        return since, "cpu_peak_rss"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "cpu_peak_rss_process"


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a view counts once)."""
    storages = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.layout == torch.sparse_csr:
            for part in (tensor.crow_indices(), tensor.col_indices(), tensor.values()):
                storages[(part.device, part.untyped_storage().data_ptr())] = part.untyped_storage().nbytes()
        elif isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided:
            storage = tensor.untyped_storage()
            storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def memory_parts(
    data, model: torch.nn.Module, optimizer: torch.optim.Optimizer, activations: int, peak: int, runtime: int = 0
) -> dict:
    """Where the peak memory goes, in bytes: the graph (``edge_index`` or
    ``adj_t``, and any other edge tensors), the node features, labels and masks, parameters,
    optimizer state, the activations kept for one step (as accounted),
    ``runtime`` (on CPU: what the process held before training beyond the
    dataset, i.e. the interpreter and libraries) and ``other``, the rest of
    the peak: autograd's temporaries (gathered messages, the loss's) and
    allocator caches."""
    edge_keys = [key for key in data.keys() if key.startswith("edge") or key.startswith("adj")]
    node_keys = [key for key in data.keys() if key not in edge_keys and key != "x"]
    parts = {
        "graph": storage_bytes(data[key] for key in edge_keys),
        "features": storage_bytes([data.x]),
        "labels_and_masks": storage_bytes(data[key] for key in node_keys),
        "parameters": storage_bytes(model.parameters()),
        "optimizer_state": storage_bytes(value for state in optimizer.state.values() for value in state.values()),
        "activations": activations,
    }
    # the resident size read before training and the peak come from two counters (/proc and getrusage),
    # whose page accounting differs slightly: runtime is capped so that the parts add up to the peak
    parts["runtime"] = min(runtime, max(peak - sum(parts.values()), 0))
    parts["other"] = max(peak - sum(parts.values()), 0)
    return parts


def memory_floor(data, hidden: int, mapped_before: int) -> dict:
    r"""The least address space a full-graph run at hidden width :math:`H`
    needs, in bytes: ``dataset`` (its tensors), ``runtime`` (what the process
    mapped before training beyond them: interpreter, libraries, allocator)
    and ``two_layer_tensors``, :math:`2 \cdot 4 N H`: a layer's input and
    output, alive together in every step and every full-graph evaluation.
    The kept activations, parameters and optimizer state come on top, so a
    run's peak address space is at least ``total``."""
    dataset = storage_bytes(data[key] for key in data.keys())
    parts = {
        "dataset": dataset,
        "runtime": max(mapped_before - dataset, 0),
        "two_layer_tensors": 2 * 4 * data.num_nodes * hidden,
    }
    return {**parts, "total": sum(parts.values())}
