r"""Mini-batches of one graph, from PyG's own loaders: what ``iexact train --batch-size`` trains on.

Two samplers (``--sampler``):

- ``neighbor``: :class:`torch_geometric.loader.NeighborLoader`. A batch is
  ``batch_size`` seed nodes (training nodes) and their sampled neighbourhood,
  ``fanout[l]`` neighbours per node at hop :math:`l` (``-1``: all of them);
  the loss is on the seed nodes, the first ``batch.batch_size`` rows of the
  output. PyG samples with ``pyg-lib`` or ``torch-sparse``: neither is on
  PyPI as a wheel for every torch, so install one as PyG's install guide
  says (PyG's wheel index, or ``pip install --no-build-isolation
  torch-sparse``, which compiles it against the installed torch).
- ``random-node``: :class:`torch_geometric.loader.RandomNodeLoader`. The
  nodes are split at random into parts of ``batch_size`` nodes and each
  part's induced subgraph is one batch, its loss on the training nodes it
  holds (PyG's ogbn-proteins recipe; pure PyTorch).

With several processes (:mod:`~iexact.experiments.distributed`) each rank
draws its batches from its own share of the nodes through
:class:`torch.utils.data.DistributedSampler`, which gives every rank the same
number of batches (padding the shares to equal length by repeating nodes, as
torch does), so no rank waits for a gradient the others never send.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
import torch_geometric.typing
from torch.utils.data import Dataset, DistributedSampler
from torch_geometric.loader import NeighborLoader, RandomNodeLoader

SAMPLERS = ("neighbor", "random-node")


@dataclasses.dataclass(frozen=True)
class Batching:
    """How an epoch is cut into mini-batches.

    Args:
        batch_size (int): seed nodes per batch (``neighbor``) or nodes per
            part (``random-node``), at least 1.
        fanout (tuple of int, optional): neighbours sampled per node at each
            hop, one entry per message-passing layer, each ``>= 1`` or ``-1``
            for all; ``neighbor`` only. (default: :obj:`None`)
        sampler (str, optional): ``"neighbor"`` or ``"random-node"``.
            (default: ``"neighbor"``)
    """

    batch_size: int
    fanout: tuple[int, ...] | None = None
    sampler: str = "neighbor"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.sampler == "neighbor":
            if not self.fanout:
                raise ValueError(
                    "the neighbor sampler needs a fanout: one neighbour count per layer, "
                    "e.g. --fanout 15,10,5 (-1 takes every neighbour)"
                )
            bad = [count for count in self.fanout if count == 0 or count < -1]
            if bad:
                raise ValueError(
                    f"fanout {','.join(map(str, self.fanout))} is invalid: every count must be "
                    f">= 1, or -1 for all neighbours (got {', '.join(map(str, bad))})"
                )
        elif self.fanout is not None:
            raise ValueError(
                "--fanout applies to the neighbor sampler only: random-node batches are "
                "induced subgraphs of --batch-size nodes"
            )

    def check_layers(self, layers: int) -> None:
        """Refuse a fanout whose hop count is not the model's ``layers``."""
        if self.fanout is not None and len(self.fanout) != layers:
            raise ValueError(
                f"fanout {','.join(map(str, self.fanout))} has {len(self.fanout)} hops but the "
                f"model has {layers} message-passing layers: give one count per layer"
            )

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "fanout": None if self.fanout is None else list(self.fanout),
            "sampler": self.sampler,
        }

    @classmethod
    def from_dict(cls, record: dict | None) -> Batching | None:
        if record is None:
            return None
        fanout = record.get("fanout")
        return cls(record["batch_size"], None if fanout is None else tuple(fanout), record["sampler"])


def _require_sampling_backend() -> None:
    if not (torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE):
        raise ImportError(
            "the neighbor sampler needs pyg-lib or torch-sparse, which PyG samples with: install "
            "one (pip install --no-build-isolation torch-sparse compiles it against this torch), "
            "or use --sampler random-node, which needs neither"
        )


def share_sampler(
    count: int, shards: tuple[int, int] | None, seed: int = 0, shuffle: bool = True
) -> DistributedSampler | None:
    """This rank's :class:`DistributedSampler` over ``count`` items for
    ``shards`` = ``(rank, world_size)`` (``None`` unsharded): shares of equal
    size, padded by repeating items.

    Raises:
        ValueError: fewer items than ranks.
    """
    if shards is None:
        return None
    rank, world_size = shards
    if count < world_size:
        raise ValueError(
            f"{count} nodes cannot be shared by {world_size} ranks: every rank needs at least one; use fewer processes"
        )
    items = cast(Dataset, range(count))  # the sampler reads only the length and draws indices
    return DistributedSampler(items, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)


def make_loader(data, batching: Batching, shards: tuple[int, int] | None = None, seed: int = 0):
    """The loader of one epoch's batches of ``data`` (a PyG ``Data`` with
    ``train_mask``), shuffled from torch's global generator; with ``shards`` =
    ``(rank, world_size)``, this rank's share through a
    :class:`DistributedSampler` seeded with ``seed`` (call
    :func:`set_epoch` before each epoch)."""
    if batching.sampler == "neighbor":
        _require_sampling_backend()
        train_nodes = data.train_mask.nonzero().view(-1)
        sampler = share_sampler(train_nodes.numel(), shards, seed)
        return NeighborLoader(
            data,
            num_neighbors=list(batching.fanout or ()),  # Batching: a neighbor sampler has a fanout
            batch_size=batching.batch_size,
            input_nodes=train_nodes,
            shuffle=sampler is None,
            sampler=sampler,
        )
    parts = max(1, math.ceil(data.num_nodes / batching.batch_size))
    sampler = share_sampler(data.num_nodes, shards, seed)
    return RandomNodeLoader(data, num_parts=parts, shuffle=sampler is None, sampler=sampler)


def set_epoch(loader, epoch: int) -> None:
    """Reshuffle a sharded loader's :class:`DistributedSampler` for ``epoch`` (no-op unsharded)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def batch_loss_rows(batch) -> torch.Tensor:
    """Rows of a batch's output that the loss is on: its seed nodes (neighbor
    batches) or its training nodes (random-node batches)."""
    if "input_id" in batch:
        return torch.arange(batch.batch_size, device=batch.x.device)
    return batch.train_mask.nonzero().view(-1)
