r"""``GCNConv`` with a compressed linear input and an aggregation that keeps nothing."""
from __future__ import annotations

import torch

from ..layers import CompressedModule
from .common import aggregate, gcn_graph, is_lazy, needs_sparse_value_grad


class GCNConvMixin(CompressedModule):
    r""":math:`X' = \hat D^{-1/2} \hat A \hat D^{-1/2} X \Theta^\top + b`.

    The linear map runs through the (converted) ``lin`` child, which keeps
    :math:`X` compressed; the aggregation keeps nothing, and the normalized
    adjacency is recomputed in backward from the caller's graph (or read from
    the module's cache with ``cached=True``).

    Stores: :math:`X` compressed (by ``lin``); nothing else.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if conv.aggr != "add":
            return f"aggr={conv.aggr!r}"
        return "lazy (run one forward pass before compress_)" if is_lazy(conv.lin) else None

    def forward(self, x, edge_index, edge_weight=None):
        if not self._compressing() or not isinstance(x, torch.Tensor) or needs_sparse_value_grad(edge_index, edge_weight):
            return super().forward(x, edge_index, edge_weight)
        structure, weight, gcn = gcn_graph(self, x, edge_index, edge_weight, self.improved)
        out = aggregate(self.lin(x), structure, weight, "sum", self.flow, gcn=gcn, config=self.iexact_config)
        return out if self.bias is None else out + self.bias
