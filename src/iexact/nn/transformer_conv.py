r"""``TransformerConv`` keeping compressed queries, keys, values and exact attention weights."""

from __future__ import annotations

import torch
from torch_geometric.nn import TransformerConv

from ..autograd import (
    AttentionSpec,
    CompressedLinearFunction,
    GateFunction,
    TransformerAttentionFunction,
    mark_intermediate,
)
from ..graph import is_sparse, plain
from .aggregation import sparse_value_reason
from .handler import CompressedModule, register_handler
from .heads import matrices_reason, merged_heads, split_heads
from .linear import shared_input_linears
from .message_inputs import message_inputs, runs_stock


@register_handler(TransformerConv)
class TransformerConvHandler(CompressedModule):
    r""":math:`X'_i = W_1 X_i + \sum_{j \in \mathcal N(i)} \alpha_{ij} (W_2 X_j + W_6 e_{ij})`,
    :math:`\alpha_{ij} = \mathrm{softmax}_j \big((W_3 X_i)^\top (W_4 X_j + W_6 e_{ij}) / \sqrt{d}\big)`
    per head, through :class:`~iexact.autograd.TransformerAttentionFunction`;
    with ``beta=True`` the skip is gated,
    :math:`\beta_i = \sigma(w_5^\top [X'_i, W_1 X_i, X'_i - W_1 X_i])`, through
    :class:`~iexact.autograd.GateFunction`. The conv computes its linear
    maps itself: each input compressed once for all the maps that read it
    (queries and skip read the targets, keys and values the sources, one
    tensor for all four), the edge attributes once for ``lin_edge``.

    Inputs as TransformerConv takes them: a tensor :math:`X` or a bipartite
    pair :math:`(X_s, X_t)`, ``edge_attr`` with ``edge_dim``, every graph
    form (edge features with an ``edge_index`` or ``EdgeIndex``).

    Stores: each input compressed once (unprojected unless ``rp_edge_convs``), queries, keys and values once each
    and the projected edge features twice (never projected: they enter per-edge
    dot products), the attention weights (float32, one per edge and head),
    the dropout generator snapshot; with ``beta`` the gate and the
    difference it weighs. ``return_attention_weights`` takes the module's own path.
    """

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        maps = (conv.lin_query, conv.lin_key, conv.lin_value, conv.lin_edge, conv.lin_skip, conv.lin_beta)
        return [module for module in maps if module is not None]

    def _stock_reason(self, x, edge_index, edge_attr, return_attention_weights) -> str | None:
        """Why this call takes TransformerConv's own forward (which raises PyG's errors for malformed input)."""
        reason = matrices_reason(x)
        if reason is not None:
            return reason
        if return_attention_weights is not None:
            return "return_attention_weights is given"
        if (edge_attr is None) != (self.lin_edge is None):
            return "edge_attr is given without edge_dim, or edge_dim without edge_attr"
        if edge_attr is not None and (is_sparse(edge_index) or edge_attr.dim() != 2):
            return "edge_attr is not an (E, D) matrix beside an edge_index"
        message_inputs(self, x, edge_index)  # PyG's errors for a malformed graph
        return sparse_value_reason(edge_index, None)

    def forward(self, x, edge_index, edge_attr=None, return_attention_weights=None):
        if not self._compressing() or runs_stock(
            self, x, edge_index, self._stock_reason(x, edge_index, edge_attr, return_attention_weights)
        ):
            return super().forward(x, edge_index, edge_attr, return_attention_weights)
        inputs = message_inputs(self, x, edge_index)
        skip_map = self.lin_skip if self.root_weight else None
        if isinstance(x, torch.Tensor):
            query, key, value, skip = shared_input_linears(
                self, x, self.lin_query, self.lin_key, self.lin_value, skip_map
            )
        else:
            key, value = shared_input_linears(self, x[0], self.lin_key, self.lin_value)
            query, skip = shared_input_linears(self, x[1], self.lin_query, skip_map)
        (edge,) = shared_input_linears(self, edge_attr, self.lin_edge) if edge_attr is not None else (None,)
        spec = AttentionSpec(inputs.num_src, inputs.num_dst, self.flow, False, is_sparse(edge_index), "separate")
        out = TransformerAttentionFunction.apply(
            split_heads(query, self.heads, self.out_channels),
            split_heads(key, self.heads, self.out_channels),
            split_heads(value, self.heads, self.out_channels),
            split_heads(edge, self.heads, self.out_channels),
            plain(edge_index),
            spec,
            self.dropout,
            self.iexact_config,
            self.iexact_seeds,
        )
        out = merged_heads(out, self.concat)
        if skip is None:
            return out
        if self.lin_beta is None:
            return out + skip
        gate_input = mark_intermediate(torch.cat([out, skip, out - skip], dim=-1))
        gate = CompressedLinearFunction.apply(
            gate_input, self.lin_beta.weight, self.lin_beta.bias, self.iexact_config.edge_conv_inputs, self.iexact_seeds
        )
        return GateFunction.apply(gate.sigmoid(), skip, out, self.iexact_config, self.iexact_seeds)
