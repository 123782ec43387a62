r"""Neighbourhood aggregation :math:`Y = A X` that keeps nothing for backward.

:math:`dX = A^\top dY` needs only the graph, which the caller already holds
(``edge_index``, ``EdgeIndex`` or a ``torch.sparse`` adjacency). Anything the
forward derives from it (GCN's self-loops and symmetric normalization, mean
degrees, COO indices of a CSR matrix) is recomputed in backward rather than
kept. Only when the edge weights themselves need a gradient,
:math:`dw_e = \langle dY_{t(e)}, X_{s(e)} \rangle`, is :math:`X` kept,
compressed.
"""
from __future__ import annotations

import dataclasses

import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import is_torch_sparse_tensor

from ..config import CompressionConfig
from ..quant import compress
from ..quant.codec import decompress
from .saving import SavingFunction, load, save

_CHUNK_ELEMENTS = 2**22  # gathered message elements per step: bounds the E x F temporary


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
    """

    num_src: int
    num_dst: int
    reduce: str = "sum"
    flow: str = "source_to_target"
    gcn: tuple[bool, bool] | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.reduce not in ("sum", "mean"):
            raise ValueError(f"reduce={self.reduce!r} is not supported: use 'sum' or 'mean'")


def plain(structure: torch.Tensor) -> torch.Tensor:
    """A PyG ``EdgeIndex`` as a plain tensor (a view of the same memory)."""
    as_tensor = getattr(structure, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else structure


def edges(structure: torch.Tensor, edge_weight: torch.Tensor | None, spec: GraphSpec, dtype: torch.dtype):
    r"""``(src, dst, weight)`` of the graph: sources, targets, weights or ``None``.

    ``structure`` is a :math:`(2, E)` index (or ``EdgeIndex``) or a
    ``torch.sparse`` adjacency :math:`A^\top` of shape (targets, sources) in
    COO, CSR or CSC layout, as PyG's convs take them.
    """
    structure = plain(structure)
    if spec.gcn is not None:
        improved, self_loops = spec.gcn
        structure, edge_weight = gcn_norm(structure, edge_weight, spec.num_src, improved,
                                          self_loops, spec.flow, dtype)
    if is_torch_sparse_tensor(structure):
        return _sparse_edges(structure)
    source, target = (0, 1) if spec.flow == "source_to_target" else (1, 0)
    return structure[source], structure[target], edge_weight


def _sparse_edges(adj_t: torch.Tensor):
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


def spmm(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None,
         num_dst: int, reduce: str) -> torch.Tensor:
    r""":math:`Y_t = \sum_{e: s \to t} w_e X_s` (divided by the in-degree for
    ``"mean"``), gathering at most :data:`_CHUNK_ELEMENTS` message elements at
    a time.

    Shapes:
        - **input:** :math:`X` :math:`(N_s, *)`, ``src``/``dst``/``weight`` :math:`(E,)`
        - **output:** :math:`(N_t, *)`
    """
    rows = x.reshape(x.shape[0], -1)
    out = rows.new_zeros(num_dst, rows.shape[1])
    step = max(1, _CHUNK_ELEMENTS // max(rows.shape[1], 1))
    for start in range(0, src.numel(), step):
        messages = rows.index_select(0, src[start : start + step])
        if weight is not None:
            messages.mul_(weight[start : start + step].to(messages.dtype).unsqueeze(1))
        out.index_add_(0, dst[start : start + step], messages)
    if reduce == "mean":
        out.div_(_in_degree(dst, num_dst).unsqueeze(1).to(out.dtype))
    return out.view(num_dst, *x.shape[1:])


def _in_degree(dst: torch.Tensor, num_dst: int) -> torch.Tensor:
    return torch.bincount(dst, minlength=num_dst).clamp_(min=1)


class AggregateFunction(SavingFunction):
    r""":math:`Y = A X` for a graph input as PyG's convs take it.

    .. math::
        Y_t = \frac{1}{c_t} \sum_{e: s \to t} w_e X_s, \qquad
        dX_s = \sum_{e: s \to t} \frac{w_e}{c_t} dY_t, \qquad
        dw_e = \frac{1}{c_t} \langle dY_t, \hat X_s \rangle,

    with :math:`c_t` the in-degree for ``"mean"`` and 1 for ``"sum"`` (all
    times ``spec.scale``).

    Stores: references to ``structure`` and ``edge_weight`` (the caller's
    own tensors, 0 new bytes); and, only when ``edge_weight`` needs a
    gradient, :math:`X` compressed with ``config``.

    Shapes:
        - **input:** :math:`X` :math:`(N_s, F)`, ``structure`` :math:`(2, E)`
          or sparse :math:`(N_t, N_s)`, ``edge_weight`` :math:`(E,)` or ``None``
        - **output:** :math:`(N_t, F)`
    """

    @staticmethod
    def forward(ctx, x, edge_weight, structure, spec: GraphSpec, config: CompressionConfig):
        src, dst, weight = edges(structure, edge_weight, spec, x.dtype)
        weight_grad = edge_weight is not None and edge_weight.requires_grad
        if weight_grad and (spec.gcn is not None or is_torch_sparse_tensor(plain(structure))):
            raise ValueError("AggregateFunction differentiates raw (2, E) edge weights only; "
                             "normalize learnable edge weights before aggregating")
        ctx.spec, ctx.x_dtype = spec, x.dtype
        packed = compress(x.detach(), config) if weight_grad else None
        save(ctx, structure, edge_weight, packed)
        out = spmm(x, src, dst, weight, spec.num_dst, spec.reduce)
        return out if spec.scale == 1.0 else out.mul_(spec.scale)

    @staticmethod
    def backward(ctx, grad_out):
        structure, edge_weight, packed = load(ctx)
        spec = ctx.spec
        src, dst, weight = edges(structure, edge_weight, spec, ctx.x_dtype)
        if spec.scale != 1.0:
            grad_out = grad_out * spec.scale
        if spec.reduce == "mean":
            grad_out = grad_out / _in_degree(dst, spec.num_dst).to(grad_out.dtype).view(-1, *[1] * (grad_out.dim() - 1))
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = spmm(grad_out, dst, src, weight, spec.num_src, "sum")
        if packed is not None and ctx.needs_input_grad[1]:
            x_hat = decompress(packed).reshape(spec.num_src, -1)
            grad_rows = grad_out.reshape(spec.num_dst, -1)
            grad_weight = torch.empty_like(edge_weight)
            step = max(1, _CHUNK_ELEMENTS // max(x_hat.shape[1], 1))
            for start in range(0, src.numel(), step):
                part = slice(start, start + step)
                grad_weight[part] = (grad_rows.index_select(0, dst[part])
                                     * x_hat.index_select(0, src[part])).sum(1).to(edge_weight.dtype)
        return grad_x, grad_weight, None, None, None
