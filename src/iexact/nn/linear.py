r"""``torch.nn.Linear`` and PyG's ``Linear`` keeping their input compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..autograd import CompressedLinearFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.Linear)
class LinearHandler(CompressedModule):
    r""":math:`Y = XW^\top + b` keeping :math:`X` compressed (see
    :class:`~iexact.autograd.CompressedLinearFunction`).

    Stores: :math:`X` compressed, :math:`\lceil N k b / 8 \rceil` bytes plus scales.
    """

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        return CompressedLinearFunction.apply(input, self.weight, self.bias, self.iexact_config, self.iexact_seeds)


@register_handler(PyGLinear)
class PyGLinearHandler(CompressedModule):
    """PyG's ``Linear``, as :class:`LinearHandler` (its argument is named ``x``)."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedLinearFunction.apply(x, self.weight, self.bias, self.iexact_config, self.iexact_seeds)
