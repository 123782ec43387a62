r"""``ResGatedGraphConv`` keeping its inputs once and its gates compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn import ResGatedGraphConv

from ..autograd import GatedMessageFunction, mark_intermediate
from ..graph import GraphSpec, is_sparse, plain
from .aggregation import sparse_value_reason
from .handler import CompressedModule, register_handler
from .linear import shared_input_linears
from .message_inputs import message_inputs, runs_stock


@register_handler(ResGatedGraphConv)
class ResGatedGraphConvHandler(CompressedModule):
    r""":math:`X'_i = W_1 X_i + \sum_{j \in \mathcal N(i)} \eta_{ij} \odot W_2 X_j + b`,
    :math:`\eta_{ij} = \sigma(W_3 X_i + W_4 X_j)`, through
    :class:`~iexact.autograd.GatedMessageFunction`. The conv computes its
    linear maps itself: each input compressed once for all the maps that
    read it (key and skip read the targets, query and value the sources).

    Inputs as ResGatedGraphConv takes them: a tensor or a bipartite pair,
    every graph form. Edge features (``edge_dim``, which enter each edge's
    linear maps) and a gate other than the sigmoid take the saved-tensor fallback.

    Stores: each input compressed once (unprojected unless ``rp_edge_convs``), the values compressed, the gates
    and their derivatives compressed (per edge and channel).
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if conv.edge_dim is not None:
            return "edge_dim (edge features in every linear map)"
        if not isinstance(conv.act, torch.nn.Sigmoid):
            return f"act={conv.act!r} (only the sigmoid gate is compressed)"
        return None

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        maps = (conv.lin_key, conv.lin_query, conv.lin_value, conv.lin_skip, conv.act)
        return [module for module in maps if module is not None]

    def forward(self, x, edge_index, edge_attr=None):
        pair = isinstance(x, (tuple, list))
        sides = tuple(x) if pair else (x, x)
        if (
            not self._compressing()
            or edge_attr is not None
            or len(sides) != 2
            or not all(isinstance(side, torch.Tensor) and side.dim() == 2 for side in sides)
            or runs_stock(self, x, edge_index, sparse_value_reason(edge_index, None))
        ):
            return super().forward(x, edge_index, edge_attr)
        inputs = message_inputs(self, sides, edge_index)
        skip_map = self.lin_skip if self.root_weight else None
        if pair:
            query, value = shared_input_linears(self, sides[0], self.lin_query, self.lin_value)
            key, skip = shared_input_linears(self, sides[1], self.lin_key, skip_map)
        else:
            key, query, value, skip = shared_input_linears(
                self, x, self.lin_key, self.lin_query, self.lin_value, skip_map
            )
        spec = GraphSpec(inputs.num_src, inputs.num_dst, flow=self.flow, sparse=is_sparse(edge_index))
        out = GatedMessageFunction.apply(
            key, query, mark_intermediate(value), plain(edge_index), spec, self.iexact_config, self.iexact_seeds
        )
        if skip is not None:
            out = out + skip
        return out if self.bias is None else out + self.bias
