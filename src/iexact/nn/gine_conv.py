r"""``GINEConv`` keeping one sign bit per message element."""

from __future__ import annotations

import torch
from torch_geometric.nn import GINEConv

from ..autograd import CompressedLinearFunction, CompressedReLUFunction, EpsScaleFunction, mark_intermediate
from ..graph import attention_edges, is_sparse
from .aggregation import linear_aggregation
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(GINEConv)
class GINEConvHandler(CompressedModule):
    r""":math:`X'_i = h_\Theta\big((1 + \epsilon) X_i + \sum_{j \in \mathcal N(i)}
    \mathrm{ReLU}(X_j + \Theta_e e_{ji})\big)` (or the mean), as PyG computes
    it, op for op.

    The messages keep one sign bit per element
    (:class:`~iexact.autograd.CompressedReLUFunction`: the ReLU's derivative
    is all their backward needs), the sum or mean keeps nothing, the edge
    map :math:`\Theta_e` (``lin``, with ``edge_dim``) keeps its input
    compressed as a Linear does (the caller's ``edge_attr`` by reference),
    :math:`(1 + \epsilon) X` keeps :math:`X` compressed only when
    :math:`\epsilon` is trained. :math:`h_\Theta` is a network of its own,
    converted module by module (as GINConv's).

    ``x`` a matrix or a bipartite pair, ``edge_attr`` an :math:`(E, D)`
    matrix beside an ``edge_index`` or ``EdgeIndex``. A ``torch.sparse`` or
    ``torch_sparse`` adjacency, static-graph batches, explain masks and
    propagate hooks take PyG's own forward, with a warning.

    Stores: one bit per message element; ``edge_attr`` compressed when it is
    not the caller's and ``lin`` is trained; :math:`X` compressed when
    :math:`\epsilon` is trained.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if linear_aggregation(conv) else f"aggr={conv.aggr!r} (only sum and mean are compressed)"

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [] if conv.lin is None else [conv.lin]

    def _stock_reason(self, x, edge_index, edge_attr) -> str | None:
        """Why this call takes GINEConv's own forward (which raises PyG's errors for malformed input)."""
        sides = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
        if len(sides) != 2 or not all(side is None or side.dim() == 2 for side in sides) or sides[0] is None:
            return "x is not a matrix or a pair of matrices (a static-graph batch?)"
        if not isinstance(edge_attr, torch.Tensor) or edge_attr.dim() != 2 or is_sparse(edge_index):
            return "edge_attr is not an (E, D) matrix beside an edge_index"
        if self.lin is None and edge_attr.shape[1] != sides[0].shape[1]:
            return "the edge and node features differ in width without edge_dim"
        return None

    def forward(self, x, edge_index, edge_attr=None, size=None):
        if not self._compressing() or runs_stock(self, x, edge_index, self._stock_reason(x, edge_index, edge_attr)):
            return super().forward(x, edge_index, edge_attr, size)
        config, seeds = self.iexact_config, self.iexact_seeds
        inputs = message_inputs(self, (x, x) if isinstance(x, torch.Tensor) else x, edge_index, size)
        src, dst, _ = attention_edges(edge_index, inputs.num_dst, self.flow, False, False)
        if self.lin is not None:
            edge_attr = CompressedLinearFunction.apply(edge_attr, self.lin.weight, self.lin.bias, config, seeds)
        messages = CompressedReLUFunction.apply(inputs.source.index_select(0, src) + edge_attr)
        out = self.aggr_module(messages, dst, dim_size=inputs.num_dst, dim=0)
        if inputs.root is not None:
            out = out + EpsScaleFunction.apply(inputs.root, self.eps, config, seeds)
        return self.nn(mark_intermediate(out))
