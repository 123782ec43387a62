r"""``GINConv`` whose aggregation keeps nothing."""
from __future__ import annotations

import torch

from ...autograd import EpsScaleFunction
from ..layers import CompressedModule
from .common import aggregate, linear_aggregation, needs_sparse_value_grad


class GINConvMixin(CompressedModule):
    r""":math:`X'_i = h_\Theta\big((1 + \epsilon) X_i + \sum_{j \in \mathcal N(i)} X_j\big)`.

    The aggregation keeps nothing; :math:`(1+\epsilon) X` keeps :math:`X`
    compressed only when :math:`\epsilon` is trained; :math:`h_\Theta` is
    compressed through its own (converted) modules.

    Stores: nothing of its own unless ``train_eps=True``.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if linear_aggregation(conv) else f"aggr={conv.aggr!r} (only sum and mean are compressed)"

    def forward(self, x, edge_index, size=None):
        if not self._compressing() or needs_sparse_value_grad(edge_index, None):
            return super().forward(x, edge_index, size)
        x_src, x_dst = (x, x) if isinstance(x, torch.Tensor) else x
        num_dst = size[1] if size is not None else (x_dst.size(0) if x_dst is not None else None)
        out = aggregate(x_src, edge_index, None, linear_aggregation(self), self.flow, num_dst,
                        config=self.iexact_config)
        if x_dst is not None:
            out = out + EpsScaleFunction.apply(x_dst, self.eps, self.iexact_config)
        return self.nn(out)
