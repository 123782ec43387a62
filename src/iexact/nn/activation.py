r"""ReLU, LeakyReLU and ELU keeping one bit per element (ELU also its compressed negative part)."""

from __future__ import annotations

import torch

from ..autograd import CompressedELUFunction, CompressedLeakyReLUFunction, CompressedReLUFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.ReLU)
class ReLUHandler(CompressedModule):
    r""":math:`\max(x, 0)`. Stores: :math:`\lceil n / 8 \rceil` bytes of signs."""

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        return CompressedReLUFunction.apply(input)


@register_handler(torch.nn.LeakyReLU)
class LeakyReLUHandler(CompressedModule):
    r"""LeakyReLU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs."""

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        return CompressedLeakyReLUFunction.apply(input, self.negative_slope)


@register_handler(torch.nn.ELU)
class ELUHandler(CompressedModule):
    r"""ELU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs and :math:`\min(y, 0)` compressed."""

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        return CompressedELUFunction.apply(input, self.alpha, self.iexact_config, self.iexact_seeds)
