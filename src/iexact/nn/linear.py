r"""``torch.nn.Linear`` and PyG's ``Linear`` keeping their input compressed."""
from __future__ import annotations

import torch
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..autograd import CompressedLinearFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.Linear, PyGLinear)
class LinearHandler(CompressedModule):
    r""":math:`Y = XW^\top + b` keeping :math:`X` compressed (see
    :class:`~iexact.autograd.CompressedLinearFunction`).

    Stores: :math:`X` compressed, :math:`\lceil N k b / 8 \rceil` bytes plus scales.
    """

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedLinearFunction.apply(x, self.weight, self.bias, self.iexact_config, self.iexact_seeds)
