r"""Dropout whose keep-mask is redrawn in backward from a snapshot of the generator."""

from __future__ import annotations

import torch

from ..ops.dropout import dropout_keep, dropout_redraw
from .saving import SavingFunction, load, save


def keep(
    like: torch.Tensor, p: float, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""``(mask, state)``: the scaled keep-mask ``torch.nn.functional.dropout``
    draws for ``like`` (for ``like[valid]`` only, when given) and the
    generator snapshot to redraw it from; ``(None, None)`` for :math:`p = 0`,
    zeros and no snapshot for :math:`p = 1` (no draw, as torch does)."""
    if p == 0:
        return None, None
    if p == 1:
        return torch.zeros_like(like), None
    return dropout_keep(like, p, valid)


def redraw(
    like: torch.Tensor, p: float, state: torch.Tensor | None, valid: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The mask :func:`keep` drew for ``like`` (laid out alike), from its ``state``."""
    if p == 0:
        return None
    if p == 1:
        return torch.zeros_like(like)
    assert state is not None  # keep() took a snapshot for 0 < p < 1
    return dropout_redraw(state, like, p, valid)


def mask_like(grad_out: torch.Tensor, layout: tuple) -> torch.Tensor:
    """A tensor laid out as forward's mask (``(shape, stride, dtype)``), for
    :func:`redraw`: ``grad_out`` itself where it is, so that no buffer is
    allocated only to carry the layout (the mask is drawn into one of its own)."""
    shape, stride, dtype = layout
    if (grad_out.shape, grad_out.stride(), grad_out.dtype) == layout:
        return grad_out
    return torch.empty_strided(shape, stride, dtype=dtype, device=grad_out.device)


class DropoutFunction(SavingFunction):
    r""":math:`y = x \cdot m / (1 - p)`, :math:`m_i \sim \text{Bernoulli}(1 - p)`,
    drawn from torch's default generator exactly as ``torch.nn.functional.dropout``
    draws it (so the mask equals the FP32 model's under the same seed);
    backward redraws :math:`m` from a snapshot of the generator taken before.

    Stores: the generator snapshot (5,056 bytes on CPU, 16 on CUDA; nothing
    for :math:`p = 1`), no per-element state.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask, state = keep(x, p)
        save(ctx, state)
        ctx.p = p
        if mask is None:
            return x.clone()
        ctx.layout = (mask.shape, mask.stride(), mask.dtype)
        return mask.mul_(x)  # in the mask's own buffer: no third (N, F) tensor beside x and the mask

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (state,) = load(ctx)
        if ctx.p == 0:
            return grad_out, None
        mask = redraw(mask_like(grad_out, ctx.layout), ctx.p, state)
        assert mask is not None  # p > 0
        return (mask.mul_(grad_out) if mask.dtype == grad_out.dtype else grad_out * mask.to(grad_out.dtype)), None
