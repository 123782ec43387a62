r"""``GATv2Conv`` keeping compressed features, attention weights and sign bits."""

from __future__ import annotations

import torch
from torch_geometric.nn import GATv2Conv

from ..autograd import AttentionSpec, GATv2AttentionFunction
from ..graph import is_sparse, plain
from .aggregation import sparse_value_reason
from .handler import CompressedModule, register_handler
from .heads import attention_output, matrices_reason, split_heads
from .linear import shared_input_linears
from .message_inputs import message_inputs, runs_stock


@register_handler(GATv2Conv)
class GATv2ConvHandler(CompressedModule):
    r""":math:`X'_i = \sum_{j \in \mathcal N(i) \cup \{i\}} \alpha_{ij} \Theta_s X_j`
    (plus the residual :math:`R X_i` with ``residual=True``) with GATv2's
    attention :math:`\alpha_{ij} = \mathrm{softmax}_j\, a^\top \mathrm{LeakyReLU}(\Theta_s X_j + \Theta_t X_i)`,
    through :class:`~iexact.autograd.GATv2AttentionFunction`. The conv
    computes ``lin_l``, ``lin_r`` and ``res`` itself, each input compressed
    once for all the maps that read it.

    Inputs as GATv2Conv takes them: a tensor :math:`X` (``lin_l`` and
    ``lin_r``, one map with ``share_weights=True``) or a bipartite pair
    :math:`(X_s, X_t)`, with self-loops for the first :math:`\min(N_s, N_t)` nodes.

    Stores: each input compressed once (unprojected unless ``rp_edge_convs``), the source features compressed twice
    and separate target features once, the attention weights (float32, one
    per edge and head), one sign bit per edge, head and channel, the dropout
    generator snapshot. Edge features (``edge_dim``),
    ``return_attention_weights`` and a pair under ``flow="target_to_source"``
    take the module's own path.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if conv.edge_dim is not None:
            return "edge_dim (edge features in the attention)"
        return None

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [module for module in dict.fromkeys((conv.lin_l, conv.lin_r, conv.res)) if module is not None]

    def _stock_reason(self, x, edge_index, edge_attr, return_attention_weights) -> str | None:
        """Why this call takes GATv2Conv's own forward (which raises PyG's errors for malformed input)."""
        pair = isinstance(x, (tuple, list))
        reason = matrices_reason(x)
        if reason is not None:
            return reason
        if edge_attr is not None or return_attention_weights:
            return "edge_attr or return_attention_weights is given"
        if pair and self.flow != "source_to_target":
            return 'a bipartite pair is given with flow="target_to_source"'
        inputs = message_inputs(self, x, edge_index)
        if not pair and not inputs.num_src == inputs.num_dst == x.size(0):
            return f"the graph's size ({inputs.num_src}, {inputs.num_dst}) is not square over x's {x.size(0)} nodes"
        return sparse_value_reason(edge_index, None)

    def forward(self, x, edge_index, edge_attr=None, return_attention_weights=None):
        if not self._compressing() or runs_stock(
            self, x, edge_index, self._stock_reason(x, edge_index, edge_attr, return_attention_weights)
        ):
            return super().forward(x, edge_index, edge_attr, return_attention_weights)
        inputs = message_inputs(self, x, edge_index)
        if isinstance(x, torch.Tensor) and self.share_weights:
            source, residual = shared_input_linears(self, x, self.lin_l, self.res)
            target, targets = None, "shared"
        elif isinstance(x, torch.Tensor):
            source, target, residual = shared_input_linears(self, x, self.lin_l, self.lin_r, self.res)
            targets = "separate"
        else:
            (source,) = shared_input_linears(self, x[0], self.lin_l)
            target, residual = shared_input_linears(self, x[1], self.lin_r, self.res)
            targets = "separate"
        spec = AttentionSpec(
            inputs.num_src, inputs.num_dst, self.flow, self.add_self_loops, is_sparse(edge_index), targets
        )
        out = GATv2AttentionFunction.apply(
            split_heads(source, self.heads, self.out_channels),
            split_heads(target, self.heads, self.out_channels),
            self.att,
            plain(edge_index),
            spec,
            self.negative_slope,
            self.dropout,
            self.iexact_config,
            self.iexact_seeds,
        )
        return attention_output(out, self.concat, residual, self.bias)
