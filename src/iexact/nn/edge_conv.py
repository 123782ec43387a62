r"""``EdgeConv`` and ``DynamicEdgeConv``, whose network's first linear map keeps the node features, not the edges'
messages."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch_geometric.index import index2ptr
from torch_geometric.nn import MLP, DynamicEdgeConv, EdgeConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..autograd import EdgePairLinearFunction
from ..graph import attention_edges, is_sparse
from .aggregation import linear_aggregation
from .handler import CompressedModule, has_forward_hooks, register_handler
from .message_inputs import message_inputs, runs_stock

_EXTREMA = ("max", "min")  # aggregated by their module's handler (iexact.nn.extremum_aggregation)


def first_linear(nn: Any) -> Any:
    """The linear map ``nn`` applies first to its input as it is: the first
    child of a ``torch.nn.Sequential``, the first of PyG's ``MLP``'s ``lins``;
    ``None`` for any other network."""
    if type(nn) is torch.nn.Sequential and len(nn) and type(nn[0]) in (torch.nn.Linear, PyGLinear):
        return nn[0]
    if type(nn) is MLP:
        return nn.lins[0]
    return None


def after_first_linear(nn: Any, h: torch.Tensor) -> torch.Tensor:
    """What ``nn`` computes from ``h``, its first linear map's output: the
    ``Sequential``'s other children in order, or PyG's ``MLP.forward`` from
    its first layer's activation, norm and dropout on (no ``batch``, as
    ``EdgeConv`` calls it)."""
    if isinstance(nn, torch.nn.Sequential):
        for layer in list(nn)[1:]:
            h = layer(h)
        return h
    last = len(nn.lins) - 1
    for i, (lin, norm) in enumerate(zip(nn.lins, nn.norms, strict=False)):  # one norm fewer with plain_last
        h = lin(h) if i else h
        if nn.act is not None and nn.act_first:
            h = nn.act(h)
        h = norm(h, None, None) if nn.supports_norm_batch else norm(h)
        if nn.act is not None and not nn.act_first:
            h = nn.act(h)
        h = torch.nn.functional.dropout(h, p=nn.dropout[i], training=nn.training)
    if nn.plain_last:
        h = nn.lins[-1](h) if last else h
        h = torch.nn.functional.dropout(h, p=nn.dropout[-1], training=nn.training)
    return h


@register_handler(EdgeConv)
class EdgeConvHandler(CompressedModule):
    r""":math:`X'_i = \square_{j \in \mathcal N(i)} h_\Theta(X_i \,\Vert\, X_j - X_i)`
    (:math:`\square` the max, min, sum or mean), whose network's first linear
    map keeps the node features instead of its :math:`E \times 2F` input
    (:class:`~iexact.autograd.EdgePairLinearFunction`): that input is linear
    in the node features, so the map's weight gradient is a product of the
    node features with :math:`dY` summed to the targets and to the sources.
    The forward is PyG's, op for op (the concatenated messages are made, as
    PyG makes them, and dropped after the map): outputs equal the stock
    conv's bit for bit, under autocast too. The map keeps :math:`X` once
    (each side of a bipartite pair once), unprojected unless
    ``rp_edge_convs`` (the network's per-edge activations are most of what
    the conv keeps), a :math:`1/(2E/N)` share of the elements its input
    has. The rest of :math:`h_\Theta` runs as its converted modules, and so
    does its aggregation: the max and min keep one bit per message element
    saying where the extremum is (:mod:`iexact.nn.extremum_aggregation`),
    sum and mean nothing.

    :math:`h_\Theta` is a ``torch.nn.Sequential`` beginning with a linear
    map, or PyG's ``MLP`` (any other network takes the saved-tensor
    fallback). Forward hooks on :math:`h_\Theta` or its first map, a
    ``torch_sparse.SparseTensor``, explain masks and static-graph batches take
    PyG's own forward, with a warning.

    Stores: the node features compressed once (both sides of a bipartite pair
    once each), what :math:`h_\Theta`'s other modules keep, one bit per
    message element for the max or min.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if first_linear(conv.nn) is None:
            return "its nn does not begin with a linear map (a Sequential starting with a Linear, or PyG's MLP)"
        if not (linear_aggregation(conv) or (isinstance(conv.aggr, str) and conv.aggr in _EXTREMA)):
            return f"aggr={conv.aggr!r} (max, min, sum and mean are compressed)"
        return None

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        first = first_linear(conv.nn)
        return [] if first is None else [first]

    def forward(self, x, edge_index):
        if not self._compressing() or runs_stock(self, x, edge_index, _stock_reason(self, x)):
            return super().forward(x, edge_index)
        return _compressed(self, x, edge_index)


def _stock_reason(conv, x) -> str | None:
    """Why this call of an EdgeConv takes PyG's own forward (which raises PyG's errors for malformed input)."""
    sides = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
    if len(sides) != 2 or not all(isinstance(side, torch.Tensor) and side.dim() == 2 for side in sides):
        return "x is not a matrix or a pair of matrices (a static-graph batch?)"
    first = first_linear(conv.nn)
    if first.weight.shape[1] != sides[0].shape[1] + sides[1].shape[1]:
        return "the features do not match its nn's input width"
    if has_forward_hooks(first, cast(torch.nn.Module, conv.nn)):  # neither is called here
        return "forward hooks are registered on its nn"
    return None


def _compressed(conv, x, edge_index) -> torch.Tensor:
    """The compressed forward of an EdgeConv (or a DynamicEdgeConv, once its graph is built)."""
    source, target = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
    inputs = message_inputs(conv, (source, target), edge_index)
    src, dst, _ = attention_edges(edge_index, inputs.num_dst, conv.flow, False, is_sparse(edge_index))
    first = first_linear(conv.nn)
    config, seeds = conv.iexact_config.edge_conv_inputs, conv.iexact_seeds
    pair = (source, None if target is source else target)
    messages = EdgePairLinearFunction.apply(*pair, src, dst, first.weight, first.bias, config, seeds)
    messages = after_first_linear(conv.nn, messages)
    return conv.aggr_module(messages, dst, dim_size=inputs.num_dst, dim=0)


def knn_graph(conv, x, batch) -> torch.Tensor:
    """The graph a ``DynamicEdgeConv`` builds in its forward, as PyG builds it: pyg-lib's
    ``knn`` of the features (each target's ``conv.k`` nearest sources, within its graph
    of ``batch``), flipped to source-to-target."""
    pair = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
    if pair[0].dim() != 2:
        raise ValueError("Static graphs not supported in DynamicEdgeConv")
    sides = (batch, batch) if isinstance(batch, torch.Tensor) else (None, None) if batch is None else tuple(batch)
    pointers = [None if side is None else index2ptr(side) for side in sides]
    return torch.ops.pyg.knn(pair[0], pair[1], pointers[0], pointers[1], conv.k, False, 1).flip([0])


@register_handler(DynamicEdgeConv)
class DynamicEdgeConvHandler(CompressedModule):
    r"""``DynamicEdgeConv``: the graph of each target's :math:`k` nearest
    neighbours in feature space built as PyG builds it (:func:`knn_graph`, no
    gradient flows through it), then the message of :class:`EdgeConvHandler`
    on it: the network's first linear map keeps the node features, not the
    :math:`kN \times 2F` concatenations.

    Stores: as :class:`EdgeConvHandler`, and the :math:`(2, kN)` graph it built.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return EdgeConvHandler.unsupported(conv)

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return EdgeConvHandler.owned(conv)

    def forward(self, x, batch=None):
        if not self._compressing():
            return super().forward(x, batch)
        reason = _stock_reason(self, x)
        edge_index = None if reason is not None else knn_graph(self, x, batch)
        if runs_stock(self, x, edge_index, reason):  # or explain masks, propagate hooks on the built graph
            return super().forward(x, batch)
        return _compressed(self, x, edge_index)
