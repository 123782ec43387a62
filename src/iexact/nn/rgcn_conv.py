r"""``RGCNConv`` and ``FastRGCNConv``: every relation's aggregation from node features stored once."""

from __future__ import annotations

import torch
from torch_geometric.nn import FastRGCNConv, RGCNConv

from ..autograd.relational import RelationalFunction
from ..graph import GraphSpec, is_sparse, plain
from .aggregation import linear_aggregation
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(RGCNConv, FastRGCNConv)
class RGCNConvHandler(CompressedModule):
    r""":math:`X'_i = X_i W_0 + \sum_r \frac{1}{|\mathcal N_r(i)|} \sum_{j \in
    \mathcal N_r(i)} X_j W_r + b` (or the sums), through
    :class:`~iexact.autograd.relational.RelationalFunction`: the node
    features are stored once, compressed, for every relation's weight
    gradient, where PyG's ``RGCNConv`` keeps each relation's aggregation in
    full and ``FastRGCNConv`` each edge's :math:`W_{r(e)}` (:math:`E \cdot D
    \cdot F` values). ``num_bases`` composes the weights before the product
    (their gradient flows to the bases as in PyG). Node indices as input
    (featureless nodes: PyG gathers rows of the weights, keeping no
    activation) run PyG's own forward.

    Stores: :math:`X` compressed, once (each side of a pair once); references to
    ``edge_index`` and ``edge_type``.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if conv.num_blocks is not None:
            return "num_blocks (the block-diagonal decomposition is not compressed)"
        return None if linear_aggregation(conv) else f"aggr={conv.aggr!r} (only sum and mean are compressed)"

    def forward(self, x, edge_index, edge_type=None):
        pair = (x, x) if not isinstance(x, (tuple, list)) else tuple(x)
        featureless = not isinstance(pair[0], torch.Tensor) or not pair[0].is_floating_point()
        reason = "the graph is a torch.sparse adjacency" if is_sparse(edge_index) else None
        if featureless or runs_stock(self, x, edge_index, reason) or edge_type is None:  # PyG then asks for it
            return super().forward(x, edge_index, edge_type)
        inputs = message_inputs(self, pair, edge_index, None)
        reduce = linear_aggregation(self)
        assert reduce is not None  # unsupported() refuses the other aggregations
        spec = GraphSpec(inputs.num_src, inputs.num_dst, reduce, self.flow)
        weight = self.weight
        if self.num_bases is not None:
            weight = (self.comp @ weight.view(self.num_bases, -1)).view(self.num_relations, *self.weight.shape[1:])
        source, root = pair
        out = RelationalFunction.apply(
            source,
            None if root is source else root,
            weight,
            self.root,
            plain(edge_index),
            edge_type,
            spec,
            self.iexact_config,
            self.iexact_seeds,
        )
        return out if self.bias is None else out + self.bias
