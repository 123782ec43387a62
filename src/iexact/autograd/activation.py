r"""ReLU and LeakyReLU keep one bit per element (the sign of the input); ELU adds its compressed negative part."""

from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..quant import pack_mask, unpack_mask
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack


class CompressedReLUFunction(SavingFunction):
    r""":math:`y = \max(x, 0)`; backward :math:`dx = dy \cdot [x > 0]`.

    Stores: :math:`\lceil n / 8 \rceil` bytes (the sign bits).

    Both directions select rather than multiply by the boolean mask (a
    product would first cast it to a float tensor as large as :math:`x`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        save(ctx, pack_mask(x > 0))
        ctx.shape = x.shape
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (packed,) = load(ctx)
        positive = unpack_mask(packed, ctx.shape)
        return torch.where(positive, grad_out, 0.0)


class CompressedLeakyReLUFunction(SavingFunction):
    r""":math:`y = x` for :math:`x > 0`, else :math:`a x`; backward
    :math:`dx = dy \cdot (1 \text{ if } x > 0 \text{ else } a)`.

    Stores: :math:`\lceil n / 8 \rceil` bytes (the sign bits).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, negative_slope: float) -> torch.Tensor:
        positive = x > 0
        save(ctx, pack_mask(positive))
        ctx.shape, ctx.slope = x.shape, negative_slope
        return torch.nn.functional.leaky_relu(x, negative_slope)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (packed,) = load(ctx)
        positive = unpack_mask(packed, ctx.shape)
        return torch.where(positive, grad_out, grad_out * ctx.slope), None


class CompressedELUFunction(SavingFunction):
    r""":math:`y = x` for :math:`x > 0`, else :math:`\alpha (e^x - 1)`; backward
    :math:`dx = dy \cdot (1 \text{ if } x > 0 \text{ else } y + \alpha)`.

    Keeps the sign bits and :math:`\min(y, 0)` compressed with ``config``
    (never projected: the derivative is needed element by element). The
    estimate of :math:`y + \alpha` is unbiased, so is :math:`dx`.

    Stores: :math:`\lceil n / 8 \rceil` bytes of signs plus the packed
    :math:`\min(y, 0)` (:math:`\lceil n b / 8 \rceil` bytes and scales).
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, alpha: float, config: CompressionConfig, seeds: SeedStream | None
    ) -> torch.Tensor:
        out = torch.nn.functional.elu(x, alpha)
        positive = x > 0
        negative_part = out.clamp(max=0)
        save(ctx, pack_mask(positive), pack(negative_part, config.unprojected, seeds))
        ctx.shape, ctx.alpha = x.shape, alpha
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        signs, packed = load(ctx)
        slope = unpack(packed).to(grad_out.dtype).add_(ctx.alpha)
        positive = unpack_mask(signs, ctx.shape)
        return torch.where(positive, grad_out, grad_out * slope), None, None, None
