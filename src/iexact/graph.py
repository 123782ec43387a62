r"""Graph inputs as PyG's convs take them, read in one place.

A graph reaches a conv as a :math:`(2, E)` ``edge_index`` (a plain tensor or
a PyG ``EdgeIndex``) or as a ``torch.sparse`` adjacency :math:`A^\top` of
shape (targets, sources) in COO, CSR or CSC layout. Everything the compressed
ops need from it lives here: the edge list, node counts, GCN's normalization,
GAT's self-loops, and the sparse-dense product :math:`Y = A X`, which walks
the edges in chunks (:func:`edge_chunks`) so the :math:`E \times F` message
temporary stays bounded.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import is_torch_sparse_tensor

from . import ops

CHUNK_ELEMENTS = 2**22  # gathered message elements per step: bounds the E x F temporary


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    r"""How to read a graph input and which aggregation to apply.

    Args:
        num_src (int): number of source nodes (rows of :math:`X`).
        num_dst (int): number of target nodes (rows of :math:`Y`).
        reduce (str): ``"sum"`` or ``"mean"`` (over incoming edges, an empty
            neighbourhood gives 0).
        flow (str): PyG's ``"source_to_target"`` (``edge_index[0]`` is the
            source) or ``"target_to_source"``.
        gcn (tuple or None): ``(improved, add_self_loops)`` to apply GCN's
            :math:`\hat D^{-1/2} \hat A \hat D^{-1/2}` normalization on the
            fly, or ``None`` to use the edge weights as given.
        scale (float): a constant factor on the result (GCNII's
            :math:`1 - \alpha`); folded in here, it costs no saved scalar.
        sparse (bool): the graph is a ``torch.sparse`` adjacency (read once,
            where it arrives: a traced backward may not inspect layouts).
    """

    num_src: int
    num_dst: int
    reduce: str = "sum"
    flow: str = "source_to_target"
    gcn: tuple[bool, bool] | None = None
    scale: float = 1.0
    sparse: bool = False

    def __post_init__(self) -> None:
        if self.reduce not in ("sum", "mean"):
            raise ValueError(f"reduce={self.reduce!r} is not supported: use 'sum' or 'mean'")


def plain(structure: torch.Tensor) -> torch.Tensor:
    """A PyG ``EdgeIndex`` as a plain tensor (a view of the same memory); anything else as it is."""
    as_tensor = getattr(structure, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else structure


def is_sparse(structure) -> bool:
    """Whether ``structure`` is a ``torch.sparse`` adjacency rather than an edge index."""
    return is_torch_sparse_tensor(plain(structure))


def sparse_edges(adj_t: torch.Tensor):
    """``(src, dst, values)`` of a ``torch.sparse`` :math:`A^\\top` in COO, CSR or CSC layout."""
    if adj_t.layout == torch.sparse_coo:
        indices = adj_t._indices()
        return indices[1], indices[0], adj_t._values()
    if adj_t.layout == torch.sparse_csr:
        counts = adj_t.crow_indices().diff()
        rows = torch.arange(counts.numel(), device=counts.device).repeat_interleave(counts)
        return adj_t.col_indices(), rows, adj_t.values()
    if adj_t.layout == torch.sparse_csc:
        counts = adj_t.ccol_indices().diff()
        cols = torch.arange(counts.numel(), device=counts.device).repeat_interleave(counts)
        return cols, adj_t.row_indices(), adj_t.values()
    raise ValueError(f"unsupported sparse layout {adj_t.layout}: use COO, CSR or CSC")


def gcn_normalized(structure, edge_weight, num_nodes: int, improved: bool, self_loops: bool, flow: str,
                   dtype: torch.dtype):
    r"""GCN's :math:`\hat D^{-1/2} (A + (1 + \text{improved}) I) \hat D^{-1/2}`
    (self-loops only with ``self_loops``): PyG's own ``gcn_norm`` on the plain graph."""
    return gcn_norm(plain(structure), edge_weight, num_nodes, improved, self_loops, flow, dtype)


def edges(structure: torch.Tensor, edge_weight: torch.Tensor | None, spec: GraphSpec, dtype: torch.dtype):
    r"""``(src, dst, weight)`` of the graph: sources, targets, weights or ``None``,
    GCN-normalized on the fly when ``spec.gcn`` says so."""
    structure = plain(structure)
    if spec.gcn is not None:
        improved, self_loops = spec.gcn
        normalize = gcn_normalized if spec.sparse else ops.gcn_norm
        structure, edge_weight = normalize(structure, edge_weight, spec.num_src, improved, self_loops,
                                           spec.flow, dtype)
    if spec.sparse:
        return sparse_edges(structure)
    source, target = (0, 1) if spec.flow == "source_to_target" else (1, 0)
    return structure[source], structure[target], edge_weight


def attention_edges(structure: torch.Tensor, num_nodes: int, flow: str, self_loops: bool,
                    sparse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(src, dst, valid)`` as GATConv reads its graph (``sparse``: a
    ``torch.sparse`` adjacency). With ``self_loops`` GATConv removes existing
    self-loops and appends one per node; here they stay in place, marked
    ``False`` in ``valid`` (their attention is zero), so the edge count
    :math:`E + N` is known before the data; ``valid`` is ``None`` otherwise."""
    structure = plain(structure)
    if sparse:
        src, dst, _ = sparse_edges(structure)
    else:
        src, dst = (structure[0], structure[1]) if flow == "source_to_target" else (structure[1], structure[0])
    if not self_loops:
        return src, dst, None
    loops = torch.arange(num_nodes, device=src.device, dtype=src.dtype)
    valid = torch.cat([src != dst, torch.ones_like(loops, dtype=torch.bool)])
    return torch.cat([src, loops]), torch.cat([dst, loops]), valid


def edge_chunks(num_edges: int, width: int):
    """Slices of at most :data:`CHUNK_ELEMENTS` / ``width`` edges covering
    ``range(num_edges)``; one slice under ``torch.compile``, whose fused
    kernels need no bound on the temporary (and whose edge counts may be
    known only at run time)."""
    if torch.compiler.is_compiling():
        return (slice(None),)
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    return (slice(start, start + step) for start in range(0, num_edges, step))


def in_degree(dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    """Incoming edges per target node, at least 1 (an empty neighbourhood's mean is 0).
    (A scatter rather than ``bincount``: its output shape is known before the data.)"""
    counts = torch.zeros(num_dst, dtype=torch.int64, device=dst.device)
    return counts.index_add_(0, dst, torch.ones_like(dst)).clamp_(min=1)


def spmm(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None,
         num_dst: int, reduce: str) -> torch.Tensor:
    r""":math:`Y_t = \sum_{e: s \to t} w_e X_s` (divided by the in-degree for ``"mean"``).

    Shapes:
        - **input:** :math:`X` :math:`(N_s, *)`, ``src``/``dst``/``weight`` :math:`(E,)`
        - **output:** :math:`(N_t, *)`
    """
    rows = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    out = rows.new_zeros(num_dst, rows.shape[1])
    for part in edge_chunks(src.numel(), rows.shape[1]):
        messages = rows.index_select(0, src[part])
        if weight is not None:
            messages.mul_(weight[part].to(messages.dtype).unsqueeze(1))
        out.index_add_(0, dst[part], messages)
    if reduce == "mean":
        out.div_(in_degree(dst, num_dst).unsqueeze(1).to(out.dtype))
    return out.view(num_dst, *x.shape[1:])


def edge_dots(a: torch.Tensor, b: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    r""":math:`\langle a_{t(e)}, b_{s(e)} \rangle` per edge, summed over the last
    dimension: :math:`(E, *)` for :math:`a` :math:`(N_t, *, C)`, :math:`b` :math:`(N_s, *, C)`."""
    out = a.new_empty(src.numel(), *a.shape[1:-1])
    for part in edge_chunks(src.numel(), math.prod(a.shape[1:])):
        out[part] = (a.index_select(0, dst[part]) * b.index_select(0, src[part])).sum(-1)
    return out
