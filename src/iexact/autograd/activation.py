r"""ReLU and LeakyReLU that keep one bit per element: the sign of the input."""
from __future__ import annotations

import torch

from ..quant.bitmask import pack_mask, unpack_mask


class CompressedReLUFunction(torch.autograd.Function):
    r""":math:`y = \max(x, 0)`; backward :math:`dx = dy \cdot [x > 0]`.

    Stores: :math:`\lceil n / 8 \rceil` bytes (the sign bits).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        positive = x > 0
        ctx.signs, ctx.shape = pack_mask(positive), x.shape
        return x * positive

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        positive = unpack_mask(ctx.signs, ctx.shape)
        ctx.signs = None
        return grad_out * positive


class CompressedLeakyReLUFunction(torch.autograd.Function):
    r""":math:`y = x` for :math:`x > 0`, else :math:`a x`; backward
    :math:`dx = dy \cdot (1 \text{ if } x > 0 \text{ else } a)`.

    Stores: :math:`\lceil n / 8 \rceil` bytes (the sign bits).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, negative_slope: float) -> torch.Tensor:
        positive = x > 0
        ctx.signs, ctx.shape, ctx.slope = pack_mask(positive), x.shape, negative_slope
        return torch.where(positive, x, x * negative_slope)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        positive = unpack_mask(ctx.signs, ctx.shape)
        ctx.signs = None
        return torch.where(positive, grad_out, grad_out * ctx.slope), None
