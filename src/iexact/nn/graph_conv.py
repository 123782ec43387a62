r"""``GraphConv`` storing its input once for both linear maps."""

from __future__ import annotations

import torch
from torch_geometric.nn import GraphConv

from ..graph import is_sparse
from .aggregation import aggregated_linear, linear_aggregation, sparse_value_reason
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(GraphConv)
class GraphConvHandler(CompressedModule):
    r""":math:`X'_i = W_1 X_i + W_2 \sum_{j \in \mathcal N(i)} e_{j,i} X_j`
    (or the mean), computed as :math:`A (X W_2^\top) + X W_1^\top + b`.

    As for ``SAGEConv``, the aggregation is linear, so ``lin_rel``'s
    :math:`W_2` is applied before it and both maps read the same :math:`X`,
    compressed once (:func:`~iexact.nn.aggregation.aggregated_linear`);
    bipartite inputs :math:`(X_s, X_t)` store each side once. The edge
    weights :math:`e_{j,i}` (``edge_weight``, or a ``torch.sparse``
    adjacency's values, which PyG reads instead of ``edge_weight``) weigh the
    sum; only when they need a gradient is :math:`X W_2^\top` kept, compressed.

    Stores: :math:`X` compressed, once; nothing for the aggregation unless the edge weights need a gradient.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if linear_aggregation(conv) else f"aggr={conv.aggr!r} (only sum and mean are compressed)"

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [conv.lin_rel, conv.lin_root]

    def forward(self, x, edge_index, edge_weight=None, size=None):
        if not self._compressing() or runs_stock(self, x, edge_index, sparse_value_reason(edge_index, edge_weight)):
            return super().forward(x, edge_index, edge_weight, size)
        pair = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
        inputs = message_inputs(self, pair, edge_index, size)
        weight = None if is_sparse(edge_index) else edge_weight  # PyG weighs a sparse graph by its own values
        root = inputs.root
        weights = (self.lin_rel.weight, self.lin_root.weight)
        out = aggregated_linear(self, inputs.source, root, weights, edge_index, weight, inputs)
        return out if self.lin_rel.bias is None else out.add_(self.lin_rel.bias)  # in place: out is this conv's own
