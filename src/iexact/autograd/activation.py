r"""Element-wise activations: ReLU and LeakyReLU keep one bit per element (the sign
of the input), ELU and PReLU add their compressed negative part, smooth ones
(GELU, SiLU, Mish, Tanh, Sigmoid, Softplus) keep their compressed derivative."""

from __future__ import annotations

from collections.abc import Callable

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


def _unit_like(x: torch.Tensor) -> torch.Tensor:
    """A gradient of ones shaped as ``x`` without allocating it (an expanded scalar)."""
    return x.new_ones(()).expand_as(x)


# kind: (forward(x, *params), derivative(x, y, *params)), each torch's own kernel
SMOOTH: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "gelu": (
        lambda x, approximate: torch.nn.functional.gelu(x, approximate=approximate),
        lambda x, y, approximate: torch.ops.aten.gelu_backward(_unit_like(x), x, approximate=approximate),
    ),
    "silu": (torch.nn.functional.silu, lambda x, y: torch.ops.aten.silu_backward(_unit_like(x), x)),
    "mish": (torch.nn.functional.mish, lambda x, y: torch.ops.aten.mish_backward(_unit_like(x), x)),
    "tanh": (torch.tanh, lambda x, y: torch.ops.aten.tanh_backward(_unit_like(y), y)),
    "sigmoid": (torch.sigmoid, lambda x, y: torch.ops.aten.sigmoid_backward(_unit_like(y), y)),
    "softplus": (
        lambda x, beta, threshold: torch.nn.functional.softplus(x, beta, threshold),
        lambda x, y, beta, threshold: torch.ops.aten.softplus_backward(_unit_like(x), x, beta, threshold),
    ),
}


class CompressedSmoothFunction(SavingFunction):
    r""":math:`y = f(x)` for a smooth element-wise :math:`f` (``kind``, one of
    :data:`SMOOTH`, with its ``params``); backward :math:`dx = dy \odot f'(x)`.

    Keeps :math:`f'(x)` itself, as torch's own backward kernel computes it,
    compressed with ``config`` (never projected: it is needed element by
    element). :math:`dx` is linear in it, so stochastic rounding keeps
    :math:`dx` unbiased; storing :math:`x` instead would not (:math:`f'` is
    not linear).

    Stores: the packed :math:`f'(x)`, :math:`\lceil n b / 8 \rceil` bytes and
    two scales per block.
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, kind: str, params: tuple, config: CompressionConfig, seeds: SeedStream | None
    ) -> torch.Tensor:
        function, derivative = SMOOTH[kind]
        out = function(x, *params)
        save(ctx, pack(derivative(x, out, *params), config.unprojected, seeds))
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (packed,) = load(ctx)
        return grad_out * unpack(packed).to(grad_out.dtype), None, None, None, None


class CompressedPReLUFunction(SavingFunction):
    r""":math:`y = x` for :math:`x > 0`, else :math:`a_c x` (:math:`a` per
    channel, dim 1, or one for all); backward :math:`dx = dy \cdot (1 \text{
    if } x > 0 \text{ else } a_c)` and :math:`da_c = \sum dy \cdot \min(x, 0)`
    over the channel's elements.

    Keeps the sign bits and :math:`\min(x, 0)` compressed with ``config``
    (never projected); :math:`da` is linear in it, so unbiased.

    Stores: :math:`\lceil n / 8 \rceil` bytes of signs plus the packed
    :math:`\min(x, 0)`.
    """

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, weight: torch.Tensor, config: CompressionConfig, seeds: SeedStream | None
    ) -> torch.Tensor:
        save(ctx, pack_mask(x > 0), pack(x.clamp(max=0), config.unprojected, seeds), weight)
        ctx.shape = x.shape
        return torch.nn.functional.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        signs, packed, weight = load(ctx)
        positive = unpack_mask(signs, ctx.shape)
        channels = weight.numel() > 1
        shape = [1] * grad_out.dim()
        if channels:
            shape[1] = -1
        slope = weight.view(shape) if channels else weight.reshape(())
        grad_x = torch.where(positive, grad_out, grad_out * slope)
        products = grad_out * unpack(packed).to(grad_out.dtype)
        dims = [d for d in range(grad_out.dim()) if not (channels and d == 1)]
        grad_weight = products.sum(dims).reshape(weight.shape) if dims else products.reshape(weight.shape)
        return grad_x, grad_weight, None, None
