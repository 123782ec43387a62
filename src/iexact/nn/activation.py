r"""ReLU, LeakyReLU and ELU keeping one bit per element (ELU also its compressed negative part)."""
from __future__ import annotations

import torch

from ..autograd import CompressedELUFunction, CompressedLeakyReLUFunction, CompressedReLUFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.ReLU)
class ReLUHandler(CompressedModule):
    r""":math:`\max(x, 0)`. Stores: :math:`\lceil n / 8 \rceil` bytes of signs."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedReLUFunction.apply(x)


@register_handler(torch.nn.LeakyReLU)
class LeakyReLUHandler(CompressedModule):
    r"""LeakyReLU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedLeakyReLUFunction.apply(x, self.negative_slope)


@register_handler(torch.nn.ELU)
class ELUHandler(CompressedModule):
    r"""ELU. Stores: :math:`\lceil n / 8 \rceil` bytes of signs and :math:`\min(y, 0)` compressed."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedELUFunction.apply(x, self.alpha, self.iexact_config, self.iexact_seeds)
