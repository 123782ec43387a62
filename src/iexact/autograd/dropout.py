r"""Dropout whose keep-mask is redrawn in backward from a snapshot of the generator."""
from __future__ import annotations

import torch

from ..seeds import generator_state, keep_mask
from .saving import SavingFunction, load, save


def snapshot(device: torch.device, p: float) -> torch.Tensor | None:
    """The generator state a mask of drop probability ``p`` will be drawn from; ``None``
    when nothing is drawn (:math:`p \\in \\{0, 1\\}`)."""
    return generator_state(device) if 0 < p < 1 else None


def dropout_mask(empty: torch.Tensor, p: float, state: torch.Tensor | None = None) -> torch.Tensor | None:
    r"""The scaled keep-mask of ``torch.nn.functional.dropout`` in ``empty``: ``None``
    for :math:`p = 0`, zeros for :math:`p = 1` (no draw, as torch does), else
    :func:`iexact.seeds.keep_mask`, redrawn from ``state`` when given."""
    if p == 0:
        return None
    if p == 1:
        return empty.zero_()
    return keep_mask(empty, p, state)


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
        state = snapshot(x.device, p)
        mask = dropout_mask(torch.empty_like(x), p)
        save(ctx, state)
        ctx.p = p
        if mask is None:
            return x.clone()
        ctx.layout = (mask.shape, mask.stride(), mask.dtype)
        return x * mask

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (state,) = load(ctx)
        if ctx.p == 0:
            return grad_out, None
        shape, stride, dtype = ctx.layout
        mask = dropout_mask(torch.empty_strided(shape, stride, dtype=dtype, device=grad_out.device), ctx.p, state)
        return grad_out * mask.to(grad_out.dtype), None
