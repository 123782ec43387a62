r"""ReLU, LeakyReLU and ELU keeping one bit per element (ELU also its compressed negative part)."""

from __future__ import annotations

import torch

from ..autograd import CompressedELUFunction, CompressedLeakyReLUFunction, CompressedReLUFunction
from .handler import CompressedModule, register_handler


class ElementwiseHandler(CompressedModule):
    """An element-wise activation: the module's own forward, but for
    :meth:`compressed` in compressed training."""

    def forward(self, input):
        return self.compressed(input) if self._compressing() else super().forward(input)

    def compressed(self, input: torch.Tensor) -> torch.Tensor:
        """The activation of ``input`` through its compressed autograd Function."""
        raise NotImplementedError(f"{type(self).__name__} defines no compressed forward")


@register_handler(torch.nn.ReLU)
class ReLUHandler(ElementwiseHandler):
    r""":math:`\max(x, 0)`. Stores: :math:`\lceil n / 8 \rceil` bytes of signs."""

    def compressed(self, input):
        return CompressedReLUFunction.apply(input)


@register_handler(torch.nn.LeakyReLU)
class LeakyReLUHandler(ElementwiseHandler):
    r"""LeakyReLU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs."""

    def compressed(self, input):
        return CompressedLeakyReLUFunction.apply(input, self.negative_slope)


@register_handler(torch.nn.ELU)
class ELUHandler(ElementwiseHandler):
    r"""ELU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs and :math:`\min(y, 0)` compressed."""

    def compressed(self, input):
        return CompressedELUFunction.apply(input, self.alpha, self.iexact_config, self.iexact_seeds)
