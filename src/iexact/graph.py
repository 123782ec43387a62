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
import functools
import math
from collections.abc import Callable

import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import is_torch_sparse_tensor

from .ops import graph as graph_ops
from .ops.direct import call

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


def storages(tensor: torch.Tensor) -> list[tuple[tuple, int]]:
    """``(key, nbytes)`` of each storage behind ``tensor``, the key ``(device,
    address)`` (a sparse tensor has several: its indices and values)."""
    tensor = plain(tensor)
    if tensor.layout == torch.sparse_coo:
        parts = [tensor._indices(), tensor._values()]
    elif tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = [tensor.crow_indices(), tensor.col_indices(), tensor.values()]
    elif tensor.layout in (torch.sparse_csc, torch.sparse_bsc):
        parts = [tensor.ccol_indices(), tensor.row_indices(), tensor.values()]
    else:
        storage = tensor.untyped_storage()
        return [((storage.device, storage.data_ptr()), storage.nbytes())]
    return [entry for part in parts for entry in storages(part)]


def tensors_in(obj, found: list | None = None) -> list:
    """Every tensor in ``obj`` (tensors, lists, tuples, dicts and PyG ``Data``), appended to ``found``."""
    found = [] if found is None else found
    if isinstance(obj, torch.Tensor):
        found.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            tensors_in(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            tensors_in(item, found)
    elif callable(getattr(obj, "to_dict", None)):
        tensors_in(obj.to_dict(), found)
    return found


def is_sparse(structure) -> bool:
    """Whether ``structure`` is a ``torch.sparse`` adjacency rather than an edge index."""
    return is_torch_sparse_tensor(plain(structure))


@dataclasses.dataclass(frozen=True)
class Edges:
    r"""The edges :math:`s \to t` of a graph input, with their weights, walked in chunks.

    One side may be given by pointers instead of an index: a CSR adjacency's
    targets (``pointers`` :math:`(N_t + 1,)`, ``dst`` ``None``) or a CSC
    adjacency's sources (``pointers`` :math:`(N_s + 1,)`, ``src`` ``None``);
    edges ``pointers[v]:pointers[v + 1]`` are node :math:`v`'s. That side is
    expanded one chunk at a time, so no :math:`(E,)` index is built for it.

    Shapes:
        - ``src``, ``dst``, ``weight``: :math:`(E,)` or ``None``
    """

    src: torch.Tensor | None
    dst: torch.Tensor | None
    weight: torch.Tensor | None = None
    pointers: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.src is None) + (self.dst is None) != (self.pointers is not None):
            raise ValueError("Edges needs both indices, or one index and the other side's pointers")

    @property
    def _given_index(self) -> torch.Tensor:
        """``src``, or ``dst`` where ``src`` is given by pointers (one of them always is an index)."""
        index = self.dst if self.src is None else self.src
        assert index is not None  # __post_init__: at most one side is given by pointers
        return index

    @property
    def _pointers(self) -> torch.Tensor:
        assert self.pointers is not None  # asked only for a side without an index
        return self.pointers

    @property
    def count(self) -> int:
        """:math:`E`."""
        return self._given_index.numel()

    @property
    def device(self) -> torch.device:
        return self._given_index.device

    def chunks(self, width: int):
        """``(src, dst, weight)`` of consecutive edge slices (:func:`edge_chunks` for ``width``-element messages)."""
        for part in edge_chunks(self.count, width):
            yield (
                self._index(self.src, part),
                self._index(self.dst, part),
                None if self.weight is None else self.weight[part],
            )

    def indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(src, dst)`` whole, both :math:`(E,)` (the pointer side expanded)."""
        return self._index(self.src, slice(None)), self._index(self.dst, slice(None))

    def in_degree(self, num_dst: int) -> torch.Tensor:
        """Incoming edges per target node, at least 1 (an empty neighbourhood's mean is 0).
        (A scatter rather than ``bincount``: its output shape is known before the data.)"""
        if self.dst is None:
            return self._pointers.diff().clamp_(min=1)
        counts = torch.zeros(num_dst, dtype=torch.int64, device=self.dst.device)
        for _, dst, _ in self.chunks(1):
            counts.index_add_(0, dst, torch.ones_like(dst))
        return counts.clamp_(min=1)

    def _index(self, index: torch.Tensor | None, part: slice) -> torch.Tensor:
        return index[part] if index is not None else expand_pointers(self._pointers, part, self.count)


def expand_pointers(pointers: torch.Tensor, part: slice, count: int) -> torch.Tensor:
    """The node of each edge in ``part`` (of ``count`` edges) of a compressed
    index: :math:`v` for the edges ``pointers[v]:pointers[v + 1]``; :math:`(|part|,)`."""
    start, stop, _ = part.indices(count)
    if (start, stop) == (0, count):
        nodes = torch.arange(pointers.numel() - 1, device=pointers.device)
        return nodes.repeat_interleave(pointers.diff(), output_size=count)
    positions = torch.arange(start, stop, device=pointers.device, dtype=pointers.dtype)
    return torch.searchsorted(pointers, positions, right=True) - 1  # no host sync, unlike slicing rows out


def sparse_edges(adj_t: torch.Tensor) -> Edges:
    r"""The :class:`Edges` of a ``torch.sparse`` :math:`A^\top` in COO, CSR or CSC layout."""
    if adj_t.layout == torch.sparse_coo:
        indices = adj_t._indices()
        return Edges(indices[1], indices[0], adj_t._values())
    if adj_t.layout == torch.sparse_csr:
        return Edges(adj_t.col_indices(), None, adj_t.values(), adj_t.crow_indices())
    if adj_t.layout == torch.sparse_csc:
        return Edges(None, adj_t.row_indices(), adj_t.values(), adj_t.ccol_indices())
    raise ValueError(f"unsupported sparse layout {adj_t.layout}: use COO, CSR or CSC")


def gcn_normalized(
    structure,
    edge_weight,
    num_nodes: int,
    improved: bool,
    self_loops: bool,
    flow: str,
    dtype: torch.dtype,
    traceable: bool = False,
):
    r"""GCN's :math:`\hat D^{-1/2} (A + (1 + \text{improved}) I) \hat D^{-1/2}`
    (self-loops only with ``self_loops``) as ``(structure, edge_weight)``.

    PyG's own ``gcn_norm`` on the plain graph: differentiable in the edge
    weights, and the form PyG's forward caches. With ``traceable`` (a plain
    ``(2, E)`` edge index, normalized again in a compressed backward) the
    ``iexact::gcn_norm`` operator instead, which adds self-loops without a
    host sync (:func:`iexact.ops.graph.gcn_norm`)."""
    arguments = (plain(structure), edge_weight, num_nodes, improved, self_loops, flow, dtype)
    return call(graph_ops.gcn_norm, *arguments) if traceable else gcn_norm(*arguments)


def edges(
    structure: torch.Tensor,
    edge_weight: torch.Tensor | None,
    spec: GraphSpec,
    dtype: torch.dtype,
    shared: Callable[[Callable[[], tuple]], tuple] | None = None,
) -> Edges:
    r"""The :class:`Edges` of the graph with their weights (or ``None``),
    GCN-normalized on the fly when ``spec.gcn`` says so; ``shared`` is given
    the normalization to compute and returns it, computed by this call or
    by another reading the same graph
    (:class:`iexact.autograd.shared_graphs.SharedGraph`)."""
    structure = plain(structure)
    if spec.gcn is not None:
        improved, self_loops = spec.gcn
        normalize = functools.partial(  # traceable: a plain (2, E) index, normalized again in backward
            gcn_normalized,
            structure,
            edge_weight,
            spec.num_src,
            improved,
            self_loops,
            spec.flow,
            dtype,
            not spec.sparse,
        )
        structure, edge_weight = normalize() if shared is None else shared(normalize)
    if spec.sparse:
        return sparse_edges(structure)
    source, target = (0, 1) if spec.flow == "source_to_target" else (1, 0)
    return Edges(structure[source], structure[target], edge_weight)


def attention_edges(
    structure: torch.Tensor, num_nodes: int, flow: str, self_loops: bool, sparse: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(src, dst, valid)`` as GATConv reads its graph (``sparse``: a
    ``torch.sparse`` adjacency). With ``self_loops`` GATConv removes existing
    self-loops and appends one per node; here they stay in place, marked
    ``False`` in ``valid`` (their attention is zero), so the edge count
    :math:`E + N` is known before the data; ``valid`` is ``None`` otherwise."""
    structure = plain(structure)
    if sparse:
        src, dst = sparse_edges(structure).indices()
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


def spmm(x: torch.Tensor, edges: Edges, spec: GraphSpec, into: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`Y = R + s A X`: :math:`Y_t = R_t + \frac{s}{c_t} \sum_{e: s \to t} w_e X_{s(e)}`
    for :math:`N_t` = ``spec.num_dst`` targets, :math:`s` = ``spec.scale``,
    with :math:`c_t` the in-degree for ``spec.reduce`` ``"mean"`` and 1 for ``"sum"``,
    :math:`w_e = 1` without weights, and :math:`R` = ``into`` (accumulated
    in place and returned, so the sum needs no second :math:`(N_t, F)`
    buffer) or 0.

    Shapes:
        - **input:** :math:`X` :math:`(N_s, *)`, ``into`` :math:`(N_t, *)` contiguous
        - **output:** :math:`(N_t, *)`
    """
    num_dst, reduce, scale = spec.num_dst, spec.reduce, spec.scale
    rows = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    if into is not None:
        _accumulate_scaled(into.view(num_dst, rows.shape[1]), rows, edges, False, num_dst, reduce, scale)
        return into
    out = x.new_zeros(num_dst, *x.shape[1:])  # returned whole, not as a view: callers may add to it in place
    flat = _accumulate(out.view(num_dst, rows.shape[1]), rows, edges, transpose=False, factor=None)
    if reduce == "mean":
        flat.div_(edges.in_degree(num_dst).unsqueeze(1).to(out.dtype))
    if scale != 1.0:
        flat.mul_(scale)
    return out


def spmm_adjoint(grad: torch.Tensor, edges: Edges, spec: GraphSpec, into: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`R + (s A)^\top G` for the :math:`s A` of :func:`spmm`:
    :math:`Z_v = R_v + s \sum_{e: v \to t} \frac{w_e}{c_t} G_t`, with :math:`R`
    = ``into`` (accumulated in place and returned) or 0. The factor
    :math:`s / c_t` multiplies :math:`G` once where there are more edges than
    targets, else each chunk's messages (so a sparse graph's :math:`G` is
    never copied whole).

    Shapes:
        - **input:** :math:`G` :math:`(N_t, *)`, ``into`` :math:`(N_s, *)` contiguous
        - **output:** :math:`(N_s, *)`
    """
    rows = grad.reshape(grad.shape[0], math.prod(grad.shape[1:]))
    out = grad.new_zeros(spec.num_src, *grad.shape[1:]) if into is None else into
    factor = _target_factor(edges, spec.num_dst, spec.reduce, spec.scale, rows.dtype)
    if factor is not None and edges.count > spec.num_dst:
        # more edges than targets: one (N_t, F) product is cheaper than one per message
        # (and no larger than the temporary the stock scatter-mean's backward makes)
        rows, factor = rows * factor.unsqueeze(1), None
    _accumulate(out.view(spec.num_src, rows.shape[1]), rows, edges, True, factor)
    return out


def rows_per_slice(width: int) -> int:
    """Rows of a :math:`(\\text{rows}, \\text{width})` slice holding at most
    :data:`CHUNK_ELEMENTS` elements (at least one row)."""
    return max(1, CHUNK_ELEMENTS // max(width, 1))


def _row_ranges(adj_t: torch.Tensor, width: int):
    """``(rows, first, last)`` per slice of :func:`rows_per_slice` target rows
    of a CSR :math:`A^\\top`: the slice and its edges' range. Two host reads
    per slice (its first and last edge); not for ``torch.compile``."""
    pointers = adj_t.crow_indices()
    num_rows, step = pointers.numel() - 1, rows_per_slice(width)
    for start in range(0, num_rows, step):
        stop = min(start + step, num_rows)
        yield slice(start, stop), int(pointers[start]), int(pointers[stop])


def csr_row_chunks(adj_t: torch.Tensor, width: int):
    r"""``(rows, edges)`` of a CSR :math:`A^\top` (targets by sources), a slice
    of consecutive target rows at a time: ``edges`` are those rows' edges as
    :class:`Edges` whose targets count from the slice's first row, so
    :func:`spmm` of them is the slice's rows of :math:`A X`. A slice holds
    :func:`rows_per_slice` rows, bounding a :math:`(\text{rows},
    \text{width})` buffer per slice.
    """
    pointers, columns, values = adj_t.crow_indices(), adj_t.col_indices(), adj_t.values()
    for rows, first, last in _row_ranges(adj_t, width):
        yield (
            rows,
            Edges(columns[first:last], None, values[first:last], pointers[rows.start : rows.stop + 1] - first),
        )


def csr_row_blocks(adj_t: torch.Tensor, width: int):
    r"""``(rows, A_c)`` of a CSR :math:`A^\top`, as :func:`csr_row_chunks` cuts
    it, each slice a ``torch.sparse`` CSR tensor of its own (shape ``(rows,
    N_s)``, its indices and values views of ``adj_t``'s): what PyG's ``spmm``
    takes, so a slice's product is the one PyG computes for those rows."""
    pointers, columns, values = adj_t.crow_indices(), adj_t.col_indices(), adj_t.values()
    for rows, first, last in _row_ranges(adj_t, width):
        block = torch.sparse_csr_tensor(
            pointers[rows.start : rows.stop + 1] - first,
            columns[first:last],
            values[first:last],
            size=(rows.stop - rows.start, adj_t.size(1)),
            check_invariants=False,
        )
        yield rows, block


def _target_factor(edges: Edges, num_dst: int, reduce: str, scale: float, dtype: torch.dtype):
    """:math:`s / c_t` per target :math:`(N_t,)`, or ``None`` where it is 1."""
    if reduce == "mean":
        return edges.in_degree(num_dst).to(dtype).reciprocal_().mul_(scale)
    return None if scale == 1.0 else torch.full((num_dst,), scale, dtype=dtype, device=edges.device)


def _accumulate_scaled(
    out: torch.Tensor, rows: torch.Tensor, edges: Edges, transpose: bool, num_dst: int, reduce: str, scale: float
) -> torch.Tensor:
    """:func:`_accumulate` with each message scaled by its target's :math:`s / c_t` (:func:`_target_factor`)."""
    return _accumulate(out, rows, edges, transpose, _target_factor(edges, num_dst, reduce, scale, rows.dtype))


def _accumulate(
    out: torch.Tensor, rows: torch.Tensor, edges: Edges, transpose: bool, factor: torch.Tensor | None
) -> torch.Tensor:
    r"""``out`` += :math:`f_{t(e)} w_e` ``rows`` of each edge's source, added at its
    target (``transpose``: read at the target, added at the source), edge chunk by chunk."""
    for src, dst, weight in edges.chunks(rows.shape[1]):
        read, write = (dst, src) if transpose else (src, dst)
        messages = rows.index_select(0, read)
        per_edge = None if factor is None else factor.index_select(0, dst)
        if weight is not None:
            weight = weight.to(rows.dtype)
            per_edge = weight if per_edge is None else per_edge.mul_(weight)
        if per_edge is not None:
            messages.mul_(per_edge.unsqueeze(1))
        out.index_add_(0, write.long(), messages)  # int32 indices (a lean CSR's) take a slower index_add_
        del messages
    return out


def edge_dots(a: torch.Tensor, b: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    r""":math:`\langle a_{t(e)}, b_{s(e)} \rangle` per edge, summed over the last
    dimension: :math:`(E, *)` for :math:`a` :math:`(N_t, *, C)`, :math:`b` :math:`(N_s, *, C)`."""
    out = a.new_empty(src.numel(), *a.shape[1:-1])
    for part in edge_chunks(src.numel(), math.prod(a.shape[1:])):
        out[part] = (a.index_select(0, dst[part]) * b.index_select(0, src[part])).sum(-1)
    return out


@dataclasses.dataclass(frozen=True)
class LaplacianSpec:
    r"""ChebConv's scaled Laplacian :math:`\tilde L = 2 L / \lambda_{max} - I`
    of a ``(2, E)`` edge index over ``num_nodes`` nodes: ``normalization``
    ``None`` (:math:`L = D - W`), ``"sym"`` (:math:`I - D^{-1/2} W D^{-1/2}`)
    or ``"rw"`` (:math:`I - D^{-1} W`), degrees summed over ``edge_index[0]``,
    self-loops of the graph left out, PyG's ``flow``; ``lambda_max`` where
    the caller gave it as a number (a tensor is passed beside the graph)."""

    num_nodes: int
    normalization: str | None
    flow: str = "source_to_target"
    lambda_max: float | None = None


def scaled_laplacian(
    structure: torch.Tensor,
    edge_weight: torch.Tensor | None,
    lambda_max: torch.Tensor | float | None,
    spec: LaplacianSpec,
    dtype: torch.dtype,
) -> tuple[Edges, torch.Tensor]:
    r"""``(edges, diagonal)`` of :math:`\tilde L` as ChebConv applies it,
    :math:`(\tilde L X)_t = d_t X_t + \sum_{e: s \to t} w_e X_s`: the same
    values as PyG's ``get_laplacian`` and ``ChebConv.__norm__``, with the
    graph's self-loops weighted 0 in place rather than removed and the
    diagonal kept as a vector rather than appended as edges, so that no
    shape depends on the data (no host sync) and no :math:`(2, E + N)`
    index is built. :math:`\lambda_{max}` is ``lambda_max``, else
    ``spec.lambda_max``, else twice the largest entry of :math:`L`.

    Shapes:
        - **input:** ``structure`` :math:`(2, E)`, ``edge_weight`` :math:`(E,)`,
          ``lambda_max`` a scalar tensor or ``None``
        - **output:** edge weights :math:`(E,)`, ``diagonal`` :math:`(N,)`
    """
    row, col = plain(structure)
    weight = torch.ones(row.numel(), dtype=dtype, device=row.device) if edge_weight is None else edge_weight.to(dtype)
    loop = row == col
    weight = weight.masked_fill(loop, 0)
    degree = weight.new_zeros(spec.num_nodes).index_add_(0, row, weight)
    if spec.normalization == "sym":
        root = degree.pow(-0.5).masked_fill_(degree == 0, 0)
        entries = -(root.index_select(0, row) * weight * root.index_select(0, col))
        diagonal = torch.ones_like(degree)
    elif spec.normalization == "rw":
        entries = -(degree.reciprocal().masked_fill_(degree == 0, 0).index_select(0, row) * weight)
        diagonal = torch.ones_like(degree)
    else:
        entries, diagonal = -weight, degree
    if lambda_max is None and spec.lambda_max is not None:
        lambda_max = spec.lambda_max  # a number: no tensor to copy to the device
    if lambda_max is None:
        lambda_max = 2.0 * torch.cat([diagonal, entries.masked_fill(loop, float("-inf"))]).max()
    entries = ((2.0 * entries) / lambda_max).masked_fill_(loop, 0)
    diagonal = (2.0 * diagonal) / lambda_max
    entries.masked_fill_(entries == float("inf"), 0)
    diagonal.masked_fill_(diagonal == float("inf"), 0).sub_(1)
    src, dst = (row, col) if spec.flow == "source_to_target" else (col, row)
    return Edges(src, dst, entries), diagonal
