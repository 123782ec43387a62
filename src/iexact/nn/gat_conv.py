r"""``GATConv`` keeping compressed features, attention weights and sign bits."""
from __future__ import annotations

import torch
from torch_geometric.nn import GATConv

from ..autograd import AttentionSpec, CompressedLinearFunction, GATAttentionFunction, SharedInputLinearFunction
from ..graph import is_sparse, plain
from .aggregation import sparse_value_reason
from .handler import CompressedModule, is_lazy, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(GATConv)
class GATConvHandler(CompressedModule):
    r""":math:`X'_i = \sum_{j \in \mathcal N(i) \cup \{i\}} \alpha_{ij} \Theta X_j`
    (plus the residual :math:`R X_i` with ``residual=True``) with GATConv's
    attention, through :class:`~iexact.autograd.GATAttentionFunction`. The
    conv computes ``lin`` and ``res`` itself, from one compressed copy of :math:`X`.

    Stores: :math:`X` compressed once, :math:`\Theta X` and the attention
    weights compressed, 1 bit per edge and head, the dropout generator
    snapshot. Edge features (``edge_dim``), bipartite inputs and
    ``return_attention_weights`` take the module's own path.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if conv.lin is None:
            return "bipartite in_channels (separate lin_src / lin_dst)"
        if conv.edge_dim is not None:
            return "edge_dim (edge features in the attention)"
        return "lazy (run one forward pass before compress_)" if is_lazy(*GATConvHandler.owned(conv)) else None

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [module for module in (conv.lin, conv.res) if module is not None]

    def _stock_reason(self, x, edge_index, edge_attr, size, return_attention_weights) -> str | None:
        """Why this call takes GATConv's own forward (which raises PyG's errors for malformed input)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            return "the input is bipartite or not a (N, F) matrix"
        if edge_attr is not None or return_attention_weights:
            return "edge_attr or return_attention_weights is given"
        inputs = message_inputs(self, x, edge_index, size)
        if not inputs.num_src == inputs.num_dst == x.size(0):
            return f"the graph's size ({inputs.num_src}, {inputs.num_dst}) is not square over x's {x.size(0)} nodes"
        return sparse_value_reason(edge_index, None)

    def forward(self, x, edge_index, edge_attr=None, size=None, return_attention_weights=None):
        if not self._compressing() or runs_stock(
                self, x, edge_index, self._stock_reason(x, edge_index, edge_attr, size, return_attention_weights)):
            return super().forward(x, edge_index, edge_attr, size, return_attention_weights)
        config, seeds, heads, channels = self.iexact_config, self.iexact_seeds, self.heads, self.out_channels
        if self.res is None:
            features = CompressedLinearFunction.apply(x, self.lin.weight, self.lin.bias, config, seeds)
            residual = None
        else:
            features, residual = SharedInputLinearFunction.apply(x, config, seeds, self.lin.weight, self.res.weight)
            features = features if self.lin.bias is None else features + self.lin.bias
            residual = residual if self.res.bias is None else residual + self.res.bias
        spec = AttentionSpec(x.size(0), self.flow, self.add_self_loops, is_sparse(edge_index))
        out = GATAttentionFunction.apply(features.view(-1, heads, channels), self.att_src, self.att_dst,
                                         plain(edge_index), spec, self.negative_slope, self.dropout, config, seeds)
        out = out.reshape(-1, heads * channels) if self.concat else out.mean(dim=1)
        if residual is not None:
            out = out + residual
        return out if self.bias is None else out + self.bias
