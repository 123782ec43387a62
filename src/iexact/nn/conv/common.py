r"""What the compressed convs share: reading the graph input and GCN normalization."""
from __future__ import annotations

import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import is_torch_sparse_tensor

from ...autograd import AggregateFunction, GraphSpec
from ...config import CompressionConfig
from ...autograd.aggregate import plain

_REDUCE = {"add": "sum", "sum": "sum", "mean": "mean"}


def linear_aggregation(conv) -> str | None:
    """``"sum"`` / ``"mean"`` for a conv whose aggregation is a (weighted) sum or mean, else ``None``."""
    return _REDUCE.get(conv.aggr) if isinstance(conv.aggr, str) else None


def is_lazy(*linears) -> bool:
    return any(isinstance(lin.weight, torch.nn.parameter.UninitializedParameter) for lin in linears)


def node_counts(structure, num_src: int, num_dst: int | None) -> tuple[int, int]:
    """``(num_src, num_dst)``: a sparse adjacency's shape wins over the features'."""
    structure = plain(structure)
    if is_torch_sparse_tensor(structure):
        return structure.size(1), structure.size(0)
    return num_src, num_src if num_dst is None else num_dst


def aggregate(x, structure, edge_weight, reduce: str, flow: str, num_dst: int | None = None, *,
              config: CompressionConfig, gcn: tuple[bool, bool] | None = None,
              scale: float = 1.0) -> torch.Tensor:
    r""":math:`A X` through :class:`~iexact.autograd.AggregateFunction` (keeps nothing
    unless ``edge_weight`` needs a gradient)."""
    num_src, num_dst = node_counts(structure, x.size(0), num_dst)
    spec = GraphSpec(num_src, num_dst, reduce, flow, gcn, scale)
    return AggregateFunction.apply(x, edge_weight, structure, spec, config)


def gcn_graph(conv, x: torch.Tensor, edge_index, edge_weight, improved: bool):
    r"""``(structure, edge_weight, gcn)`` for :func:`aggregate`, as GCNConv and
    GCN2Conv normalize: the module's cache when ``cached=True``; otherwise
    normalization on the fly (``gcn`` flags, recomputed in backward, nothing
    kept), or, when ``edge_weight`` needs a gradient, normalized here with
    autograd so the weights' gradient flows."""
    if not conv.normalize:
        return edge_index, edge_weight, None
    if conv.cached:
        if conv._cached_edge_index is None:
            conv._cached_edge_index = gcn_norm(plain(edge_index), edge_weight, x.size(conv.node_dim),
                                               improved, conv.add_self_loops, conv.flow, x.dtype)
        return (*conv._cached_edge_index, None)
    if edge_weight is not None and edge_weight.requires_grad:
        structure, weight = gcn_norm(plain(edge_index), edge_weight, x.size(conv.node_dim),
                                     improved, conv.add_self_loops, conv.flow, x.dtype)
        return structure, weight, None
    return edge_index, edge_weight, (improved, conv.add_self_loops)


def needs_sparse_value_grad(structure, edge_weight) -> bool:
    """A ``torch.sparse`` adjacency whose values need a gradient: the compressed
    path does not differentiate sparse values, so the module's own forward runs."""
    structure = plain(structure)
    weight_grad = edge_weight is not None and edge_weight.requires_grad
    return is_torch_sparse_tensor(structure) and (structure.requires_grad or weight_grad)
