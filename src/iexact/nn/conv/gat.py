r"""``GATConv`` keeping compressed features, attention weights and sign bits."""
from __future__ import annotations

import torch

from ...autograd.attention import AttentionSpec, GATAttentionFunction
from ...autograd.aggregate import plain
from ...quant.codec import new_seed
from ..layers import CompressedModule
from .common import is_lazy, needs_sparse_value_grad


class GATConvMixin(CompressedModule):
    r""":math:`X'_i = \sum_{j \in \mathcal N(i) \cup \{i\}} \alpha_{ij} \Theta X_j`
    with GATConv's attention, through
    :class:`~iexact.autograd.GATAttentionFunction` after the (converted)
    ``lin`` child; ``res`` is a converted Linear too.

    Stores: :math:`X` compressed (by ``lin``), :math:`\Theta X` and the
    attention weights compressed, 1 bit per edge and head, the dropout seed.
    Edge features (``edge_dim``), bipartite inputs and
    ``return_attention_weights`` take the module's own path.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if conv.lin is None:
            return "bipartite in_channels (separate lin_src / lin_dst)"
        if conv.edge_dim is not None:
            return "edge_dim (edge features in the attention)"
        linears = [conv.lin] + ([conv.res] if conv.res is not None else [])
        return "lazy (run one forward pass before compress_)" if is_lazy(*linears) else None

    def forward(self, x, edge_index, edge_attr=None, size=None, return_attention_weights=None):
        if (not self._compressing() or not isinstance(x, torch.Tensor) or edge_attr is not None
                or size is not None or return_attention_weights or needs_sparse_value_grad(edge_index, None)):
            return super().forward(x, edge_index, edge_attr, size, return_attention_weights)
        heads, channels = self.heads, self.out_channels
        spec = AttentionSpec(x.size(0), self.flow, self.add_self_loops)
        seed = new_seed() if self.dropout > 0 else 0
        out = GATAttentionFunction.apply(self.lin(x).view(-1, heads, channels), self.att_src, self.att_dst,
                                         plain(edge_index), spec, self.negative_slope, self.dropout, seed,
                                         self.iexact_config)
        out = out.reshape(-1, heads * channels) if self.concat else out.mean(dim=1)
        if self.res is not None:
            out = out + self.res(x)
        return out if self.bias is None else out + self.bias
