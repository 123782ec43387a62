r"""Element-wise activations: ReLU and LeakyReLU keep one bit per element, ELU and PReLU add
their compressed negative part, GELU, SiLU, Mish, Tanh, Sigmoid and Softplus their compressed derivative."""

from __future__ import annotations

from typing import cast

import torch

from ..autograd import (
    CompressedELUFunction,
    CompressedLeakyReLUFunction,
    CompressedPReLUFunction,
    CompressedReLUFunction,
    CompressedSmoothFunction,
    DeferredActivationFunction,
    mark_intermediate,
)
from .handler import CompressedModule, has_forward_hooks, register_handler


class ElementwiseHandler(CompressedModule):
    """An element-wise activation: the module's own forward, but for
    :meth:`compressed` in compressed training."""

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        # of an input that needs no gradient (data.x) the output has no grad_fn: not the caller's all the same
        return mark_intermediate(self.compressed(input))

    def compressed(self, input: torch.Tensor) -> torch.Tensor:
        """The activation of ``input`` through its compressed autograd Function."""
        raise NotImplementedError(f"{type(self).__name__} defines no compressed forward")


class SignHandler(ElementwiseHandler):
    """An activation whose derivative is set by the sign of its input (ReLU,
    LeakyReLU). Where :mod:`iexact.nn.fusion` found a dropout to be the only
    consumer of its output (``iexact_before_dropout``), it leaves the
    derivative to that dropout, which keeps the signs of the kept elements
    only (:mod:`iexact.autograd.activation_dropout`): not with a forward hook
    on it (the hook sees the output) nor inside ``torch.compile``."""

    iexact_before_dropout = False
    slope = 0.0

    def compressed(self, input):
        if self.iexact_before_dropout and not has_forward_hooks(self) and not torch.compiler.is_compiling():
            return DeferredActivationFunction.apply(input, self.slope)
        return self.signed(input)

    def signed(self, input: torch.Tensor) -> torch.Tensor:
        """The activation through its Function keeping every sign."""
        raise NotImplementedError(f"{type(self).__name__} defines no compressed forward")


@register_handler(torch.nn.ReLU)
class ReLUHandler(SignHandler):
    r""":math:`\max(x, 0)`. Stores: :math:`\lceil n / 8 \rceil` bytes of signs
    (:math:`\approx (1 - p) n / 8` before a dropout of rate :math:`p`, kept by it)."""

    def signed(self, input):
        return CompressedReLUFunction.apply(input)


@register_handler(torch.nn.LeakyReLU)
class LeakyReLUHandler(SignHandler):
    r"""LeakyReLU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs
    (:math:`\approx (1 - p) n / 8` before a dropout of rate :math:`p`, kept by it)."""

    @property
    def slope(self) -> float:  # type: ignore[override]
        return cast(float, self.negative_slope)

    def signed(self, input):
        return CompressedLeakyReLUFunction.apply(input, self.negative_slope)


@register_handler(torch.nn.ELU)
class ELUHandler(ElementwiseHandler):
    r"""ELU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs and :math:`\min(y, 0)` compressed."""

    def compressed(self, input):
        return CompressedELUFunction.apply(input, self.alpha, self.iexact_config, self.iexact_seeds)


@register_handler(torch.nn.PReLU)
class PReLUHandler(ElementwiseHandler):
    r"""PReLU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs and :math:`\min(x, 0)`
    compressed (the weight's gradient is linear in it)."""

    def forward(self, input):
        if self._compressing() and (input.dim() >= 2 or self.weight.numel() == 1):
            return CompressedPReLUFunction.apply(input, self.weight, self.iexact_config, self.iexact_seeds)
        return super(ElementwiseHandler, self).forward(input)


class SmoothHandler(ElementwiseHandler):
    """A smooth element-wise activation keeping its derivative compressed
    (:class:`~iexact.autograd.CompressedSmoothFunction`)."""

    kind = ""

    def params(self) -> tuple:
        """The activation's settings as its ``SMOOTH`` functions take them."""
        return ()

    def compressed(self, input):
        return CompressedSmoothFunction.apply(input, self.kind, self.params(), self.iexact_config, self.iexact_seeds)


_SMOOTH_STORES = "Stores: its derivative compressed (the gradient is linear in it: unbiased)."


@register_handler(torch.nn.GELU)
class GELUHandler(SmoothHandler):
    __doc__ = f"GELU (exact or ``approximate='tanh'``). {_SMOOTH_STORES}"
    kind = "gelu"

    def params(self):
        return (self.approximate,)


@register_handler(torch.nn.SiLU)
class SiLUHandler(SmoothHandler):
    __doc__ = f"SiLU (swish). {_SMOOTH_STORES}"
    kind = "silu"


@register_handler(torch.nn.Mish)
class MishHandler(SmoothHandler):
    __doc__ = f"Mish. {_SMOOTH_STORES}"
    kind = "mish"


@register_handler(torch.nn.Tanh)
class TanhHandler(SmoothHandler):
    __doc__ = f"Tanh. {_SMOOTH_STORES}"
    kind = "tanh"


@register_handler(torch.nn.Sigmoid)
class SigmoidHandler(SmoothHandler):
    __doc__ = f"Sigmoid. {_SMOOTH_STORES}"
    kind = "sigmoid"


@register_handler(torch.nn.Softplus)
class SoftplusHandler(SmoothHandler):
    __doc__ = f"Softplus. {_SMOOTH_STORES}"
    kind = "softplus"

    def params(self):
        return (float(self.beta), float(self.threshold))
