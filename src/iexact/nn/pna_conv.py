r"""``PNAConv`` whose towers' first linear maps keep the node features, not the edges' messages."""

from __future__ import annotations

from typing import cast

import torch
from torch_geometric.nn import PNAConv
from torch_geometric.nn.aggr import DegreeScalerAggregation, MultiAggregation

from ..autograd import TowerMessageLinearFunction, TowerSpec, mark_intermediate
from ..graph import attention_edges, is_sparse
from .aggregation import compressed_aggregation
from .edge_conv import after_first_linear, first_linear
from .handler import CompressedModule, has_forward_hooks, register_handler
from .message_inputs import message_inputs, runs_stock


def scaled_aggregation_reason(aggregation: DegreeScalerAggregation) -> str | None:
    """Why PNA's degree-scaled aggregation would keep something whole, or
    ``None``: its aggregations must each be a sum or a mean (which keep
    nothing) or handled (max, min, var, std, softmax), concatenated
    (``MultiAggregation`` on PNA's three-dimensional messages runs each of
    them), its degree normalizers fixed (``train_norm`` differentiates them
    through the whole aggregation)."""
    if isinstance(aggregation.avg_deg_lin, torch.nn.Parameter):
        return "train_norm=True (its normalizers' gradient reads the whole aggregation)"
    inner = aggregation.aggr
    if isinstance(inner, MultiAggregation) and inner.mode != "cat":
        return f"its aggregations combine with mode={inner.mode!r} (only 'cat' is compressed)"
    parts = inner.aggrs if isinstance(inner, MultiAggregation) else [inner]
    unhandled = [type(part).__name__ for part in parts if not compressed_aggregation(part)]
    return f"no handler for its {', '.join(unhandled)}" if unhandled else None


@register_handler(PNAConv)
class PNAConvHandler(CompressedModule):
    r""":math:`X'_i = W \big\Vert_t \gamma_t\big(X^{(t)}_i \,\Vert\,
    \bigoplus_{j \in \mathcal N(i)} h_t(X^{(t)}_i \Vert X^{(t)}_j \Vert e_{ji})\big)`
    (:math:`\bigoplus` the degree-scaled aggregations, :math:`h_t` and
    :math:`\gamma_t` each tower's ``pre_nns`` and ``post_nns``), as PyG
    computes it, op for op: outputs equal the stock conv's bit for bit.

    Each tower's first map of :math:`h_t` runs through
    :class:`~iexact.autograd.TowerMessageLinearFunction`: its input is linear
    in the node and edge features, so it keeps the node features once for
    all towers (unprojected unless ``rp_edge_convs``) and the encoded edge
    features once, instead of an :math:`E \times 3F` concatenation per
    tower. The rest of :math:`h_t`, the aggregations (max and min one bit
    per element, var and std the centred elements compressed, sum and mean
    nothing), :math:`\gamma_t`, ``edge_encoder`` and ``lin`` run as their
    converted modules.

    Aggregations without a handler, another combine mode, trained degree
    normalizers (``train_norm``) or a ``pre_nns`` not beginning with a linear
    map take the saved-tensor fallback, named; a ``torch_sparse``
    adjacency, a ``torch.sparse`` one beside ``edge_attr``, explain masks and
    hooks take PyG's own forward, with a warning.

    Stores: the node features compressed once, the encoded edge features once,
    and what its modules keep.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if any(first_linear(nn) is None for nn in conv.pre_nns):
            return "a pre_nns network does not begin with a linear map"
        return scaled_aggregation_reason(conv.aggr_module)

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [first for first in map(first_linear, conv.pre_nns) if first is not None]

    def _stock_reason(self, x, edge_index, edge_attr) -> str | None:
        """Why this call takes PNAConv's own forward (which raises PyG's errors for malformed input)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            return "x is not a matrix"
        if (edge_attr is None) != (self.edge_dim is None):
            return "edge_attr is given without edge_dim" if self.edge_dim is None else "edge_attr is missing"
        if edge_attr is not None and (not isinstance(edge_attr, torch.Tensor) or is_sparse(edge_index)):
            return "edge_attr is not a tensor beside an edge_index"
        if has_forward_hooks(*self.owned(self), *cast(torch.nn.ModuleList, self.pre_nns)):  # not called here
            return "forward hooks are registered on a pre_nns linear map"
        return None

    def forward(self, x, edge_index, edge_attr=None):
        if not self._compressing() or runs_stock(self, x, edge_index, self._stock_reason(x, edge_index, edge_attr)):
            return super().forward(x, edge_index, edge_attr)
        spec = TowerSpec(self.towers, self.F_in, self.divide_input)
        split = (
            x.view(-1, spec.towers, spec.width) if spec.divided else x.view(-1, 1, spec.width).repeat(1, spec.towers, 1)
        )
        inputs = message_inputs(self, split, edge_index)
        src, dst, _ = attention_edges(edge_index, inputs.num_dst, self.flow, False, is_sparse(edge_index))
        edges = None if edge_attr is None else mark_intermediate(self.edge_encoder(edge_attr))  # (a frozen encoder)
        parameters = [p for lin in self.owned(self) for p in (lin.weight, lin.bias)]
        config, seeds = self.iexact_config, self.iexact_seeds
        firsts = TowerMessageLinearFunction.apply(
            x, edges, src, dst, spec, config.edge_conv_inputs, config, seeds, *parameters
        )
        messages = torch.stack([after_first_linear(nn, h) for nn, h in zip(self.pre_nns, firsts, strict=True)], 1)
        mark_intermediate(messages)  # made without a gradient when the maps are frozen
        out = torch.cat([split, self.aggr_module(messages, dst, dim_size=inputs.num_dst, dim=0)], dim=-1)
        outs = [nn(mark_intermediate(out[:, i])) for i, nn in enumerate(self.post_nns)]
        return self.lin(mark_intermediate(torch.cat(outs, dim=1)))
