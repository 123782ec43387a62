r"""The stored form of one compressed activation."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import torch

from .rounding import num_blocks, packed_size

_SCALE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


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
        center (torch.Tensor or None): float32 :math:`(D,)`, the column center
            :math:`c` subtracted before the projection and added back after
            the inverse (:func:`iexact.codec.compress`); ``None``: none.
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
    center: torch.Tensor | None = None

    def __post_init__(self) -> None:
        """Check that the fields fit together (sizes, dtypes, devices: nothing is read
        from the tensors), so that an inconsistent record fails here by name, not
        later as NaN or garbage; :meth:`check_values` reads the steps too."""

        def invalid(field: str, problem: str) -> ValueError:
            return ValueError(f"PackedActivation.{field} is invalid: {problem}")

        if not isinstance(self.shape, torch.Size):
            object.__setattr__(self, "shape", torch.Size(self.shape))
        if self.bits not in (1, 2, 4, 8):
            raise invalid("bits", f"must be one of 1, 2, 4, 8, got {self.bits!r}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise invalid("block_size", f"must be a positive int, got {self.block_size!r}")
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise invalid("dtype", f"must be a floating-point torch.dtype, got {self.dtype!r}")
        k = self.projected_width
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise invalid("projected_width", f"must be None or a positive int, got {k!r}")
        top = 2**self.bits - 1
        levels = tuple(self.levels)
        if len(levels) != top + 1 or levels[0] != 0 or levels[-1] != top or any(b <= a for a, b in pairwise(levels)):
            raise invalid("levels", f"must be {top + 1} increasing values from 0 to {top}, got {levels}")
        for name in ("codes", "mins", "steps"):
            tensor = getattr(self, name)
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1:
                raise invalid(
                    name, f"must be a 1-D tensor, got {type(tensor).__name__} {tuple(getattr(tensor, 'shape', ()))}"
                )
            if tensor.device != self.codes.device:
                raise invalid(name, f"is on {tensor.device}, the codes on {self.codes.device}")
        center = self.center
        if center is not None and (
            not isinstance(center, torch.Tensor)
            or center.dtype != torch.float32
            or center.shape != (self.width,)
            or center.device != self.codes.device
        ):
            raise invalid(
                "center",
                f"must be None or a float32 tensor of shape ({self.width},) on {self.codes.device}, got "
                f"{getattr(center, 'dtype', type(center).__name__)} {tuple(getattr(center, 'shape', ()))}",
            )
        if self.codes.dtype != torch.uint8 or self.codes.numel() != packed_size(self.numel, self.bits):
            raise invalid(
                "codes",
                f"must be {packed_size(self.numel, self.bits):,} uint8 bytes for "
                f"{self.numel:,} elements of {self.bits} bits, got {self.codes.numel():,} "
                f"{self.codes.dtype}",
            )
        blocks = num_blocks(self.numel, self.block_size)
        for name in ("mins", "steps"):
            tensor = getattr(self, name)
            if tensor.dtype not in _SCALE_DTYPES or tensor.numel() != blocks:
                raise invalid(
                    name,
                    f"must hold {blocks:,} bfloat16, float16 or float32 values (one per block "
                    f"of {self.block_size}), got {tensor.numel():,} {tensor.dtype}",
                )

    def check_values(self) -> None:
        """Raise ``ValueError`` when a step is negative, or a step or minimum is
        NaN or Inf (one read from the device)."""
        negative, bad_steps, bad_mins = torch.stack(
            [(self.steps < 0).any(), ~torch.isfinite(self.steps).all(), ~torch.isfinite(self.mins).all()]
        ).tolist()
        if negative:
            raise ValueError("PackedActivation.steps is invalid: steps are block ranges, never negative")
        if bad_steps or bad_mins:
            field = "steps" if bad_steps else "mins"
            raise ValueError(
                f"PackedActivation.{field} is invalid: it holds NaN or Inf, so every element decodes to NaN"
            )

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
        """Everything held, as tensors: codes, mins, steps, the center when
        there is one and, when projected, the seed as a 0-dim int64 tensor (so
        ``sum(t.nbytes) == nbytes``). :meth:`from_tensors` inverts it."""
        held = (self.codes, self.mins, self.steps) + (() if self.center is None else (self.center,))
        if self.projected_width is None:
            return held
        return (*held, torch.tensor(self.seed, dtype=torch.int64))

    def layout(self) -> dict:
        """The non-tensor fields (shape, dtype, bits, block size, levels, width)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("codes", "mins", "steps", "seed", "center")
        }

    @classmethod
    def from_tensors(cls, held: tuple[torch.Tensor, ...], layout: dict) -> PackedActivation:
        """Inverse of :meth:`tensors` / :meth:`layout`."""
        projected = layout["projected_width"] is not None
        seed = int(held[-1]) if projected else 0
        center = held[3] if len(held) > 3 + projected else None
        return cls(held[0], held[1], held[2], seed=seed, center=center, **layout)

    @property
    def nbytes(self) -> int:
        """Bytes held: codes, mins and steps, the center's :math:`4D` when
        centered, plus 8 for the projection seed when there is a projection
        (the matrix itself is never stored)."""
        seed_bytes = 8 if self.projected_width is not None else 0
        center_bytes = 0 if self.center is None else self.center.nbytes
        return self.codes.nbytes + self.mins.nbytes + self.steps.nbytes + center_bytes + seed_bytes
