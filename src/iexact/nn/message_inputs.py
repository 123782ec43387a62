r"""How PyG's ``MessagePassing`` reads a conv's inputs, mirrored for the compressed forwards.

A conv's ``x`` is a tensor or a pair; its graph an ``edge_index``, an
``EdgeIndex`` (which carries its own ``sparse_size``), a ``torch.sparse``
adjacency or a ``torch_sparse.SparseTensor``; an optional ``size`` pins the
node counts; ``node_dim`` names the node axis (``-2``: ``x`` may be a
*static graph* batch :math:`(B, N, F)`). :func:`message_inputs` reads all of
them with PyG's own ``_check_input`` and ``_set_size``, so the compressed
forward sees the node counts PyG would, and rejects what PyG rejects with
PyG's error.

Some integrations act inside ``propagate`` (explain masks, propagate /
message / aggregate hooks, ``torch_sparse``): :func:`stock_reason` detects
them at call time, so a handler runs PyG's own forward instead of silently
skipping them.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch_geometric.typing import SparseTensor

_HOOKS = ("propagate", "message", "aggregate", "message_and_aggregate", "edge_update")


@dataclasses.dataclass(frozen=True)
class MessageInputs:
    r"""A conv's inputs as PyG's ``propagate`` reads them.

    Attributes:
        source (torch.Tensor or None): features of the nodes messages leave
            (PyG's ``x_j``).
        root (torch.Tensor or None): the pair's second tensor (``x[1]``), which
            SAGE and GIN add to the aggregation (``x`` itself for a tensor).
        num_src (int): source nodes.
        num_dst (int): target nodes (rows of the output).
        node_dim (int): the node axis of ``source``, non-negative.
    """

    source: torch.Tensor | None
    root: torch.Tensor | None
    num_src: int
    num_dst: int
    node_dim: int


def message_inputs(conv, x, edge_index, size=None) -> MessageInputs:
    """``conv``'s inputs read as PyG's ``MessagePassing._collect`` reads them
    for a message of ``x_j`` (raising PyG's own errors for a malformed graph)."""
    sizes = conv._check_input(edge_index, size)
    target, source = (1, 0) if conv.flow == "source_to_target" else (0, 1)
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"a bipartite input is a pair (x_source, x_target), got {len(x)} items")
        pair = tuple(x)
        for dim, side in enumerate(pair):
            if isinstance(side, torch.Tensor):
                conv._set_size(sizes, dim, side)
    else:
        pair = (x, x)
        conv._set_size(sizes, source, x)
    num_src = sizes[source] if sizes[source] is not None else sizes[target]
    num_dst = sizes[target] if sizes[target] is not None else sizes[source]
    features = pair[source]
    node_dim = conv.node_dim % features.dim() if isinstance(features, torch.Tensor) else 0
    return MessageInputs(features, pair[1], num_src, num_dst, node_dim)


def stock_reason(conv, x, edge_index) -> str | None:
    """Why ``conv`` must run PyG's own forward for this call, or ``None``:
    explain masks or hooks acting inside ``propagate``, a ``torch_sparse``
    adjacency, or sparse input features."""
    if conv.explain:
        return "explain masks are set (torch_geometric.explain)"
    hooks = [
        kind
        for kind in _HOOKS
        if getattr(conv, f"_{kind}_forward_pre_hooks") or getattr(conv, f"_{kind}_forward_hooks")
    ]
    if hooks:
        return f"{'/'.join(hooks)} forward hooks are registered"
    if isinstance(edge_index, SparseTensor):
        return "the adjacency is a torch_sparse.SparseTensor"
    sides = x if isinstance(x, (tuple, list)) else (x,)
    if any(isinstance(side, torch.Tensor) and side.layout != torch.strided for side in sides):
        return "the input features are a sparse tensor"
    return None


def runs_stock(conv, x, edge_index, reason: str | None = None) -> bool:
    """Whether this call of ``conv`` runs PyG's own forward: outside training
    (nothing to keep), or for ``reason`` or :func:`stock_reason`, which a
    warning names (shown once per message)."""
    if not conv._compressing():
        return True
    reason = reason or stock_reason(conv, x, edge_index)
    if reason is None:
        return False
    warnings.warn(f"iexact: {type(conv).__name__} runs PyG's own forward, uncompressed, because {reason}", stacklevel=3)
    return True
