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

from ..config import CompressionConfig
from ..graph import GraphSpec, edge_dots, edges, spmm, spmm_adjoint
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack
from .shared_graphs import SharedGraph, shared_graph


def normalization(structure, edge_weight, spec: GraphSpec, dtype) -> SharedGraph | None:
    """The :class:`~iexact.autograd.shared_graphs.SharedGraph` of a plain
    ``(2, E)`` graph GCN-normalized as ``spec`` says, in a converted model's
    forward; ``None`` for any other graph, or outside one."""
    if spec.gcn is None or spec.sparse:
        return None
    return shared_graph((spec.num_src, spec.gcn, spec.flow, dtype), structure, edge_weight)


class AggregateFunction(SavingFunction):
    r""":math:`Y = R + A X` for a graph input as PyG's convs take it.

    .. math::
        Y_t = R_t + \frac{1}{c_t} \sum_{e: s \to t} w_e X_s, \qquad
        dX_s = \sum_{e: s \to t} \frac{w_e}{c_t} dY_t, \qquad
        dw_e = \frac{1}{c_t} \langle dY_t, \hat X_s \rangle,

    with :math:`c_t` the in-degree for ``"mean"`` and 1 for ``"sum"`` (all
    times ``spec.scale``), and :math:`R` the optional ``into``
    (:math:`dR = dY`): a root term the sum is accumulated into in place, so
    a conv's :math:`A X + R` takes one :math:`(N_t, F)` buffer, not two.

    Stores: references to ``structure`` and ``edge_weight`` (the caller's
    own tensors, 0 new bytes); and, only when ``edge_weight`` needs a
    gradient, :math:`X` compressed with ``config``. A GCN-normalized graph
    read in a converted model's forward also keeps its
    :class:`~iexact.autograd.shared_graphs.SharedGraph`, which holds no
    tensor between forward and backward.

    Shapes:
        - **input:** :math:`X` :math:`(N_s, F)`, ``structure`` :math:`(2, E)`
          or sparse :math:`(N_t, N_s)`, ``edge_weight`` :math:`(E,)` or ``None``,
          ``into`` :math:`(N_t, F)` or ``None``
        - **output:** :math:`(N_t, F)` (``into`` itself when given)
    """

    @staticmethod
    def forward(
        ctx, x, edge_weight, structure, spec: GraphSpec, config: CompressionConfig, seeds: SeedStream | None, into
    ):
        shared = normalization(structure, edge_weight, spec, x.dtype)
        graph = edges(structure, edge_weight, spec, x.dtype, None if shared is None else shared.in_forward)
        weight_grad = edge_weight is not None and edge_weight.requires_grad
        if weight_grad and (spec.gcn is not None or spec.sparse):
            raise ValueError(
                "AggregateFunction differentiates raw (2, E) edge weights only; "
                "normalize learnable edge weights before aggregating"
            )
        ctx.spec, ctx.x_dtype, ctx.shared = spec, x.dtype, shared
        packed = pack(x, config, seeds, argument=True) if weight_grad else None
        save(ctx, structure, edge_weight, packed)
        if into is not None:
            ctx.mark_dirty(into)
        return spmm(x, graph, spec, into)

    @staticmethod
    def backward(ctx, grad_out):
        structure, edge_weight, packed = load(ctx)
        spec = ctx.spec
        shared = ctx.shared
        graph = edges(structure, edge_weight, spec, ctx.x_dtype, None if shared is None else shared.in_backward)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = spmm_adjoint(grad_out, graph, spec)
        if packed is not None and ctx.needs_input_grad[1]:
            grad_y = grad_out.flatten(1) * spec.scale
            if spec.reduce == "mean":
                grad_y = grad_y / graph.in_degree(spec.num_dst).unsqueeze(1).to(grad_y.dtype)
            x_hat = unpack(packed).flatten(1).to(grad_out.dtype)
            grad_weight = edge_dots(grad_y, x_hat, graph.src, graph.dst).to(edge_weight.dtype)
        return grad_x, grad_weight, None, None, None, None, grad_out if ctx.needs_input_grad[6] else None
