r"""``GENConv`` (DeeperGCN) keeping one sign bit per message element."""

from __future__ import annotations

from typing import cast

import torch
from torch_geometric.nn import GENConv

from ..autograd import CompressedReLUFunction, mark_intermediate
from ..graph import attention_edges, is_sparse
from .aggregation import compressed_aggregation
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(GENConv)
class GENConvHandler(CompressedModule):
    r""":math:`X'_i = h_\Theta\big(\square_{j \in \mathcal N(i)}
    (\mathrm{ReLU}(X_j + e_{ji}) + \varepsilon) + X_i\big)` (:math:`\square`
    its aggregation, with PyG's optional ``lin_src``, ``lin_edge``,
    ``lin_aggr_out``, ``msg_norm`` and ``lin_dst`` in their places), as PyG
    computes it, op for op.

    The messages keep one sign bit per element
    (:class:`~iexact.autograd.CompressedReLUFunction`); without edge
    features the ReLU runs on the source nodes before they are gathered to
    the edges (equal values), one bit per node and channel instead of per
    edge. The aggregation is the conv's module, converted as its own
    (softmax, max, min, var, std; sum and mean keep nothing), and so are the
    linear maps and the MLP :math:`h_\Theta`, with
    :attr:`~iexact.CompressionConfig.edge_conv_inputs` for those computing
    on nodes (:data:`~iexact.nn.convert.NODE_CHILDREN`): the messages are
    most of what the conv keeps.

    ``x`` a matrix or a bipartite pair, ``edge_attr`` an :math:`(E, D)`
    matrix beside an ``edge_index`` or ``EdgeIndex`` (a ``torch.sparse``
    adjacency without it). Other aggregations (``powermean``, a list) take
    the saved-tensor fallback; static-graph batches, a ``torch_sparse``
    adjacency, explain masks and propagate hooks take PyG's own forward,
    with a warning.

    Stores: one bit per message element (per source node and channel
    without edge features), and what its modules keep.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if compressed_aggregation(conv.aggr_module):
            return None
        return f"aggr={conv.aggr!r} (sum, mean, softmax, max, min, var and std are compressed)"

    def _stock_reason(self, x, edge_index, edge_attr) -> str | None:
        """Why this call takes GENConv's own forward (which raises PyG's errors for malformed input)."""
        sides = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
        if len(sides) != 2 or not all(side is None or side.dim() == 2 for side in sides):
            return "x is not a matrix or a pair of matrices (a static-graph batch?)"
        if sides[0] is None or sides[self.flow != "source_to_target"] is None:
            return "the messages' source features are None"
        if edge_attr is not None and (not isinstance(edge_attr, torch.Tensor) or edge_attr.dim() != 2):
            return "edge_attr is not an (E, D) matrix"
        if edge_attr is not None and is_sparse(edge_index):
            return "edge_attr is given beside a sparse adjacency"
        if edge_attr is not None and not hasattr(self, "lin_edge") and edge_attr.shape[1] != self.out_channels:
            return "the edge features and the messages differ in width without edge_dim"
        return None

    def forward(self, x, edge_index, edge_attr=None, size=None):
        if not self._compressing() or runs_stock(self, x, edge_index, self._stock_reason(x, edge_index, edge_attr)):
            return super().forward(x, edge_index, edge_attr, size)
        x = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
        if hasattr(self, "lin_src"):
            x = (self.lin_src(x[0]), x[1])
        inputs = message_inputs(self, x, edge_index, size)
        src, dst, _ = attention_edges(edge_index, inputs.num_dst, self.flow, False, is_sparse(edge_index))
        messages = mark_intermediate(self._messages(inputs.source, src, edge_attr))  # from data.x: no grad_fn
        out = mark_intermediate(self.aggr_module(messages, dst, dim_size=inputs.num_dst, dim=0))
        if hasattr(self, "lin_aggr_out"):
            out = self.lin_aggr_out(out)
        if hasattr(self, "msg_norm"):
            out = self.msg_norm(x[1] if x[1] is not None else x[0], out)
        if x[1] is not None:
            out = out + (self.lin_dst(x[1]) if hasattr(self, "lin_dst") else x[1])
        return self.mlp(mark_intermediate(out))

    def _messages(self, source: torch.Tensor, src: torch.Tensor, edge_attr: torch.Tensor | None) -> torch.Tensor:
        r""":math:`\mathrm{ReLU}(X_j + e_{ji}) + \varepsilon` per edge (PyG's ``message``)."""
        if edge_attr is None:
            return CompressedReLUFunction.apply(source).index_select(0, src) + self.eps
        if hasattr(self, "lin_edge"):
            edge_attr = cast(torch.nn.Module, self.lin_edge)(edge_attr)
        return CompressedReLUFunction.apply(source.index_select(0, src) + edge_attr) + self.eps
