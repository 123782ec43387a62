r"""What the compressed convs share: the aggregation :math:`A X` that keeps nothing."""

from __future__ import annotations

import torch

from ..autograd import AggregateFunction
from ..config import CompressionConfig
from ..graph import GraphSpec, is_sparse
from ..seeds import SeedStream
from .message_inputs import MessageInputs

_REDUCE = {"add": "sum", "sum": "sum", "mean": "mean"}


def linear_aggregation(conv) -> str | None:
    """``"sum"`` / ``"mean"`` for a conv whose aggregation is a (weighted) sum or mean, else ``None``."""
    return _REDUCE.get(conv.aggr) if isinstance(conv.aggr, str) else None


def aggregate(
    x,
    structure,
    edge_weight,
    reduce: str,
    flow: str,
    inputs: MessageInputs,
    *,
    config: CompressionConfig,
    seeds: SeedStream,
    gcn: tuple[bool, bool] | None = None,
    scale: float = 1.0,
    root: torch.Tensor | None = None,
) -> torch.Tensor:
    r""":math:`A X` (plus ``root``) along ``inputs.node_dim`` (a static-graph
    batch :math:`(B, N, F)` aggregates along :math:`N`) through
    :class:`~iexact.autograd.AggregateFunction`, which keeps nothing unless
    ``edge_weight`` needs a gradient. A ``root`` the conv made itself (and
    nothing else holds) is summed into in place: :math:`A X + R` then costs
    no buffer beyond :math:`R`."""
    spec = GraphSpec(inputs.num_src, inputs.num_dst, reduce, flow, gcn, scale, is_sparse(structure))
    node_dim = inputs.node_dim
    # (a compiled graph plans its own buffers, and Dynamo traces no mark_dirty in a Function's forward)
    fold = (
        root is not None
        and not node_dim
        and root.dtype == x.dtype
        and root.is_contiguous()
        and not torch.compiler.is_compiling()
    )
    rows = x.movedim(node_dim, 0) if node_dim else x
    out = AggregateFunction.apply(rows, edge_weight, structure, spec, config, seeds, root if fold else None)
    out = out.movedim(0, node_dim) if node_dim else out
    return out if root is None or fold else out + root


def sparse_value_reason(structure, edge_weight) -> str | None:
    """A ``torch.sparse`` adjacency whose values need a gradient: the compressed
    path does not differentiate sparse values, so the module's own forward runs."""
    weight_grad = edge_weight is not None and edge_weight.requires_grad
    if is_sparse(structure) and (structure.requires_grad or weight_grad):
        return "the sparse adjacency's values need a gradient"
    return None
