r"""Layer normalization keeping its normalized input compressed twice."""

from __future__ import annotations

import torch
from torch_geometric.nn.norm import LayerNorm as PyGLayerNorm

from ..autograd import CompressedLayerNormFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.LayerNorm)
class LayerNormHandler(CompressedModule):
    r"""``torch.nn.LayerNorm`` through :class:`~iexact.autograd.CompressedLayerNormFunction`:
    torch's own output, an unbiased gradient.

    Stores: the normalized input compressed twice (never projected) and
    4 bytes of :math:`1/\sigma` per normalized row.
    """

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        return CompressedLayerNormFunction.apply(
            input, self.weight, self.bias, self.normalized_shape, self.eps, self.iexact_config, self.iexact_seeds
        )


@register_handler(PyGLayerNorm)
class PyGLayerNormHandler(CompressedModule):
    r"""PyG's ``LayerNorm`` with ``mode="node"`` (each node's features
    normalized, as torch's): as :class:`LayerNormHandler`. ``mode="graph"``
    (one normalization over a whole graph's nodes and features) is left to PyG.

    Stores: the normalized input compressed twice (never projected) and
    4 bytes of :math:`1/\sigma` per node.
    """

    @staticmethod
    def unsupported(module) -> str | None:
        return None if module.mode == "node" else f"mode={module.mode!r} (only 'node' is compressed)"

    def forward(self, x, batch=None, batch_size=None):
        if not self._compressing():
            return super().forward(x, batch, batch_size)
        return CompressedLayerNormFunction.apply(
            x, self.weight, self.bias, (self.in_channels,), self.eps, self.iexact_config, self.iexact_seeds
        )
