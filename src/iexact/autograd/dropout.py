r"""Dropout whose keep-mask is regenerated from its seed: zero bits per element."""
from __future__ import annotations

import torch

from .saving import SavingFunction, load, save


def _scaled_keep_mask(shape, p: float, seed: int, device, dtype) -> torch.Tensor:
    """:math:`m / (1 - p)` (all zeros for :math:`p = 1`)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    keep = torch.empty(shape, device=device).bernoulli_(1.0 - p, generator=generator)
    return keep.mul_(1.0 / (1.0 - p) if p < 1 else 0.0).to(dtype)


class SeededDropoutFunction(SavingFunction):
    r""":math:`y = x \cdot m / (1 - p)`, :math:`m_i \sim \text{Bernoulli}(1 - p)`
    drawn from ``seed``; backward redraws :math:`m` from the same seed.

    Stores: the seed (8 bytes), no per-element state.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        save(ctx, torch.tensor(seed, dtype=torch.int64))
        ctx.p, ctx.shape = p, x.shape
        return x * _scaled_keep_mask(x.shape, p, seed, x.device, x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        seed = int(load(ctx)[0])
        return grad_out * _scaled_keep_mask(ctx.shape, ctx.p, seed, grad_out.device, grad_out.dtype), None, None
