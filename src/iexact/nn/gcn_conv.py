r"""``GCNConv`` keeping its input compressed and nothing for the aggregation."""

from __future__ import annotations

import torch
from torch_geometric.nn import GCNConv

from ..autograd import CompressedLinearFunction
from ..autograd.precision import plus_parameter
from ..graph import gcn_normalized
from .aggregation import aggregate, sparse_value_reason
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


def gcn_graph(conv, x: torch.Tensor, edge_index, edge_weight, improved: bool):
    r"""``(structure, edge_weight, gcn)`` for :func:`~iexact.nn.aggregation.aggregate`,
    as GCNConv and GCN2Conv normalize: the module's cache when ``cached=True``;
    otherwise normalization on the fly (``gcn`` flags, recomputed in backward,
    nothing kept), or, when ``edge_weight`` needs a gradient, normalized here
    with autograd so the weights' gradient flows."""
    if not conv.normalize:
        return edge_index, edge_weight, None
    num_nodes = x.size(conv.node_dim)
    if conv.cached:
        if conv._cached_edge_index is None:
            conv._cached_edge_index = gcn_normalized(
                edge_index, edge_weight, num_nodes, improved, conv.add_self_loops, conv.flow, x.dtype
            )
        return (*conv._cached_edge_index, None)
    if edge_weight is not None and edge_weight.requires_grad:
        structure, weight = gcn_normalized(
            edge_index, edge_weight, num_nodes, improved, conv.add_self_loops, conv.flow, x.dtype
        )
        return structure, weight, None
    return edge_index, edge_weight, (improved, conv.add_self_loops)


@register_handler(GCNConv)
class GCNConvHandler(CompressedModule):
    r""":math:`X' = \hat D^{-1/2} \hat A \hat D^{-1/2} X \Theta^\top + b`.

    The conv computes its linear map ``lin`` itself, keeping :math:`X`
    compressed; the aggregation keeps nothing, and the normalized adjacency
    is recomputed in backward from the caller's graph (or read from the
    module's cache with ``cached=True``).

    Stores: :math:`X` compressed; nothing else.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if conv.aggr == "add" else f"aggr={conv.aggr!r}"

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [conv.lin]

    def forward(self, x, edge_index, edge_weight=None):
        # a tuple x is refused by GCNConv's own forward
        if not isinstance(x, torch.Tensor) or runs_stock(
            self, x, edge_index, sparse_value_reason(edge_index, edge_weight)
        ):
            return super().forward(x, edge_index, edge_weight)
        config, seeds = self.iexact_config, self.iexact_seeds
        inputs = message_inputs(self, x, edge_index)
        structure, weight, gcn = gcn_graph(self, x, edge_index, edge_weight, self.improved)
        projected = CompressedLinearFunction.apply(x, self.lin.weight, self.lin.bias, config, seeds)
        out = aggregate(self, projected, structure, weight, inputs, gcn=gcn)
        return plus_parameter(out, self.bias)  # out is this conv's own buffer
