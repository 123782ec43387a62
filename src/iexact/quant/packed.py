r"""The stored form of one compressed activation."""
from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class PackedActivation:
    r"""A compressed activation: packed codes, per-block scales and the seed
    that regenerates the projection.

    Args:
        codes (torch.Tensor): uint8, :math:`\lceil n b / 8 \rceil` bytes, where
            :math:`n` = rows :math:`\times` stored width.
        mins (torch.Tensor): per-block minimum in the scale dtype,
            :math:`(\lceil n / G \rceil,)`.
        steps (torch.Tensor): per-block step :math:`s \ge M - m`, same shape.
        shape (torch.Size): shape of the original tensor.
        dtype (torch.dtype): dtype of the original tensor.
        bits (int): bits per code.
        block_size (int): elements per block :math:`G`.
        levels (tuple of float): the :math:`2^b` levels on :math:`[0, B]`.
        projected_width (int or None): :math:`k` when projected, else ``None``.
        seed (int): seed of the projection (unused without projection).
        projection (str): the projection's kind (:mod:`iexact.quant.projection`).
    """

    codes: torch.Tensor
    mins: torch.Tensor
    steps: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    bits: int
    block_size: int
    levels: tuple[float, ...]
    projected_width: int | None
    seed: int
    projection: str = "shared"

    @property
    def width(self) -> int:
        """Width :math:`D` of the original rows (last dimension)."""
        return self.shape[-1] if len(self.shape) else 1

    @property
    def rows(self) -> int:
        return self.shape.numel() // self.width if self.width else 0

    @property
    def numel(self) -> int:
        """Number of stored (quantized) elements :math:`n`."""
        return self.rows * (self.projected_width or self.width)

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Everything held, as tensors: codes, mins, steps and, when projected,
        the seed as a 0-dim int64 tensor (so ``sum(t.nbytes) == nbytes``).
        :meth:`from_tensors` inverts it."""
        held = (self.codes, self.mins, self.steps)
        if self.projected_width is not None:
            held += (torch.tensor(self.seed, dtype=torch.int64),)
        return held

    def layout(self) -> dict:
        """The non-tensor fields (shape, dtype, bits, block size, levels, width)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("codes", "mins", "steps", "seed")}

    @classmethod
    def from_tensors(cls, held: tuple[torch.Tensor, ...], layout: dict) -> "PackedActivation":
        """Inverse of :meth:`tensors` / :meth:`layout`."""
        seed = int(held[3]) if layout["projected_width"] is not None else 0
        return cls(held[0], held[1], held[2], seed=seed, **layout)

    @property
    def nbytes(self) -> int:
        """Bytes held: codes, mins and steps, plus 8 for the projection seed
        when there is a projection (the matrix itself is never stored)."""
        seed_bytes = 8 if self.projected_width is not None else 0
        return self.codes.nbytes + self.mins.nbytes + self.steps.nbytes + seed_bytes
