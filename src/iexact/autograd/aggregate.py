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
from ..graph import GraphSpec, edge_dots, edges, in_degree, spmm
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack


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
    def forward(ctx, x, edge_weight, structure, spec: GraphSpec, config: CompressionConfig,
                seeds: SeedStream | None):
        src, dst, weight = edges(structure, edge_weight, spec, x.dtype)
        weight_grad = edge_weight is not None and edge_weight.requires_grad
        if weight_grad and (spec.gcn is not None or spec.sparse):
            raise ValueError("AggregateFunction differentiates raw (2, E) edge weights only; "
                             "normalize learnable edge weights before aggregating")
        ctx.spec, ctx.x_dtype = spec, x.dtype
        packed = pack(x, config, seeds, argument=True) if weight_grad else None
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
            grad_out = grad_out / in_degree(dst, spec.num_dst).to(grad_out.dtype).view(-1, *[1] * (grad_out.dim() - 1))
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = spmm(grad_out, dst, src, weight, spec.num_src, "sum")
        if packed is not None and ctx.needs_input_grad[1]:
            x_hat = unpack(packed).flatten(1).to(grad_out.dtype)
            grad_weight = edge_dots(grad_out.flatten(1), x_hat, src, dst).to(edge_weight.dtype)
        return grad_x, grad_weight, None, None, None, None
