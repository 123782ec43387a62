r"""Data-parallel training: ``torch.distributed`` and ``DistributedDataParallel``, launched by ``torchrun``.

``torchrun --nproc-per-node N -m iexact train ...`` starts N processes with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their
environment; :func:`ranks_from_environment` reads them and :func:`start`
joins the process group (gloo on CPU, NCCL on CUDA, one GPU per local rank).
Every rank builds the same model (same seed), converts it, and wraps it in
``DistributedDataParallel``, which broadcasts rank 0's parameters and
averages the gradients of every step, so the ranks' parameters stay equal.

Each rank trains on its own share of the training nodes (full batch: its
share's loss; mini-batch: batches drawn from its share), shares of equal size
from ``DistributedSampler``. What differs between ranks is derived from the
rank, never stored per rank, so a checkpoint (written by rank 0 alone)
resumes on any number of processes:

- compression noise: each rank's seed streams are keyed by
  :func:`rank_key`, so the ranks' quantization noise is independent and
  averages out in DDP's mean (rank 0 keeps the single-process key);
- torch's generator (dropout, batch shuffling): reseeded before every epoch
  with :func:`epoch_seed` of (seed, run, epoch, rank).
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..nn import seed_streams
from ..seeds import splitmix64, stream_seed
from .batching import share_sampler

_MASK63 = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, measures and writes files."""
        return self.rank == 0

    @property
    def shards(self) -> tuple[int, int]:
        """``(rank, world_size)``, as :func:`~iexact.experiments.batching.make_loader` takes it."""
        return self.rank, self.world_size


def ranks_from_environment(environ=os.environ) -> Ranks | None:
    """The job ``torchrun`` started this process in, or ``None`` outside one
    (or in a job of one process, which trains as a plain single process).

    Raises:
        ValueError: the variables are malformed or inconsistent.
    """
    if "WORLD_SIZE" not in environ:
        return None
    try:
        world_size, rank = int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} must be in [0, WORLD_SIZE={world_size})")
    return None if world_size == 1 else Ranks(rank, world_size, local_rank)


def rank_device(ranks: Ranks, device: torch.device) -> torch.device:
    """The device this rank trains on: ``device`` on CPU, GPU ``LOCAL_RANK`` on CUDA."""
    if device.type != "cuda":
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"local rank {ranks.local_rank} has no GPU: torch sees {torch.cuda.device_count()}; "
            f"start at most that many processes per node"
        )
    return torch.device("cuda", ranks.local_rank)


def start(ranks: Ranks, device: torch.device, timeout_seconds: float = 600) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA); a rank that never
    arrives, or dies inside a collective, fails the others after ``timeout_seconds``."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend, rank=ranks.rank, world_size=ranks.world_size, timeout=datetime.timedelta(seconds=timeout_seconds)
    )


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` in ``DistributedDataParallel`` (rank 0's parameters broadcast to all)."""
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) to every rank, as DDP
    does before each training forward, so that every rank scores one model."""
    for buffer in module.buffers():
        dist.broadcast(buffer, 0)


def parameter_spread(module: torch.nn.Module) -> float:
    r"""The largest :math:`|\theta_r - \theta_0|` over every parameter and rank
    (0 while DDP keeps the ranks in step); a collective: every rank calls it."""
    flat = torch.cat([parameter.detach().reshape(-1) for parameter in module.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return spread.item()


def rank_key(key: int, rank: int) -> int:
    """A seed stream's key for ``rank``: ``key`` itself on rank 0, a SplitMix64
    mix of both elsewhere (int64, as the stream's state holds it)."""
    return key if rank == 0 else splitmix64((key ^ (rank * 0x9E3779B97F4A7C15)) & (2**64 - 1)) & _MASK63


def key_seed_streams(model: torch.nn.Module, rank: int) -> None:
    """Re-key ``model``'s compression seed streams for ``rank`` (their counters kept)."""
    for stream in seed_streams(model):
        state = stream.get_state()
        state[0] = rank_key(int(state[0]), rank)
        stream.set_state(state)


def epoch_seed(seed: int, run: int, epoch: int, rank: int) -> int:
    """torch's seed for one epoch of one rank: :func:`~iexact.seeds.stream_seed`
    chained over all four, in :math:`[0, 2^{62})`."""
    value = seed & (2**64 - 1)
    for part in (run, epoch, rank):
        value = stream_seed(value, part)
    return value


def train_share(train_mask: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Indices of this rank's training nodes: the unshuffled share of
    :func:`~iexact.experiments.batching.share_sampler`, of equal size on every rank."""
    nodes = train_mask.nonzero().view(-1)
    share = share_sampler(nodes.numel(), ranks.shards, shuffle=False)
    assert share is not None  # sharded: ranks.shards is given
    return nodes[torch.tensor(list(share), dtype=torch.long)]
