r"""What the compressed convs share: the aggregation :math:`A X` that keeps nothing."""
from __future__ import annotations

import torch

from ..autograd import AggregateFunction
from ..config import CompressionConfig
from ..graph import GraphSpec, is_sparse, node_counts
from ..seeds import SeedStream

_REDUCE = {"add": "sum", "sum": "sum", "mean": "mean"}


def linear_aggregation(conv) -> str | None:
    """``"sum"`` / ``"mean"`` for a conv whose aggregation is a (weighted) sum or mean, else ``None``."""
    return _REDUCE.get(conv.aggr) if isinstance(conv.aggr, str) else None


def aggregate(x, structure, edge_weight, reduce: str, flow: str, num_dst: int | None = None, *,
              config: CompressionConfig, seeds: SeedStream, gcn: tuple[bool, bool] | None = None,
              scale: float = 1.0) -> torch.Tensor:
    r""":math:`A X` through :class:`~iexact.autograd.AggregateFunction` (keeps nothing
    unless ``edge_weight`` needs a gradient)."""
    num_src, num_dst = node_counts(structure, x.size(0), num_dst)
    spec = GraphSpec(num_src, num_dst, reduce, flow, gcn, scale)
    return AggregateFunction.apply(x, edge_weight, structure, spec, config, seeds)


def needs_sparse_value_grad(structure, edge_weight) -> bool:
    """A ``torch.sparse`` adjacency whose values need a gradient: the compressed
    path does not differentiate sparse values, so the module's own forward runs."""
    weight_grad = edge_weight is not None and edge_weight.requires_grad
    return is_sparse(structure) and (structure.requires_grad or weight_grad)
