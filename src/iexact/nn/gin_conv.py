r"""``GINConv`` whose aggregation keeps nothing."""
from __future__ import annotations

import torch
from torch_geometric.nn import GINConv

from ..autograd import EpsScaleFunction
from .aggregation import aggregate, linear_aggregation, needs_sparse_value_grad
from .handler import CompressedModule, register_handler


@register_handler(GINConv)
class GINConvHandler(CompressedModule):
    r""":math:`X'_i = h_\Theta\big((1 + \epsilon) X_i + \sum_{j \in \mathcal N(i)} X_j\big)`.

    The aggregation keeps nothing; :math:`(1+\epsilon) X` keeps :math:`X`
    compressed only when :math:`\epsilon` is trained. :math:`h_\Theta` is a
    network of its own, not a linear map of the conv: its modules are
    converted (and asked about by ``filter_fn``) one by one.

    Stores: nothing of its own unless ``train_eps=True``.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if linear_aggregation(conv) else f"aggr={conv.aggr!r} (only sum and mean are compressed)"

    def forward(self, x, edge_index, size=None):
        if not self._compressing() or needs_sparse_value_grad(edge_index, None):
            return super().forward(x, edge_index, size)
        config, seeds = self.iexact_config, self.iexact_seeds
        x_src, x_dst = (x, x) if isinstance(x, torch.Tensor) else x
        num_dst = size[1] if size is not None else (x_dst.size(0) if x_dst is not None else None)
        out = aggregate(x_src, edge_index, None, linear_aggregation(self), self.flow, num_dst,
                        config=config, seeds=seeds)
        if x_dst is not None:
            out = out + EpsScaleFunction.apply(x_dst, self.eps, config, seeds)
        return self.nn(out)
