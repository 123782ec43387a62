r"""Chebyshev spectral convolution (ChebConv) keeping only its input, compressed."""

from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..graph import GraphSpec, LaplacianSpec, scaled_laplacian, spmm, spmm_adjoint
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, products, save


def _apply(x, edges, diagonal, spec: GraphSpec, adjoint: bool):
    r""":math:`\tilde L X` (or :math:`\tilde L^\top X` with ``adjoint``): the diagonal, then the edges."""
    out = x * diagonal.unsqueeze(1)
    return spmm_adjoint(x, edges, spec, into=out) if adjoint else spmm(x, edges, spec, into=out)


def _chebyshev(x, edges, diagonal, spec: GraphSpec, order: int, adjoint: bool = False) -> list[torch.Tensor]:
    r""":math:`T_0 = X`, :math:`T_1 = \tilde L X`, :math:`T_k = 2 \tilde L T_{k-1} - T_{k-2}`
    for :math:`k <` ``order`` (with :math:`\tilde L^\top` for ``adjoint``)."""
    terms = [x]
    for k in range(1, order):
        step = _apply(terms[-1], edges, diagonal, spec, adjoint)
        terms.append(step if k == 1 else step.mul_(2).sub_(terms[-2]))
    return terms


class ChebyshevFunction(SavingFunction):
    r""":math:`Y = \sum_{k<K} T_k(\tilde L) X\, W_k^\top` with the Chebyshev
    polynomials of the scaled Laplacian (:func:`~iexact.graph.scaled_laplacian`).

    Backward: :math:`G_k = T_k(\tilde L^\top)\, dY` by the same recurrence
    on the output's width, then :math:`dX = \sum_k G_k W_k` and
    :math:`dW_k = G_k^\top X`: each weight gradient reads :math:`X` once,
    linearly, so one compressed copy (projected too) gives all :math:`K`
    of them without bias, and the Chebyshev terms :math:`T_k X` are never
    kept. The Laplacian is rebuilt in backward from the caller's graph.

    Stores: :math:`X` compressed, once.

    Shapes:
        - **input:** :math:`X` :math:`(N, F)`, each :math:`W_k` :math:`(F', F)`
        - **output:** :math:`(N, F')`
    """

    @staticmethod
    def forward(
        ctx,
        x,
        structure,
        edge_weight,
        lambda_max,
        spec: LaplacianSpec,
        config: CompressionConfig,
        seeds: SeedStream | None,
        *weights,
    ):
        graph = GraphSpec(spec.num_nodes, spec.num_nodes)
        edges, diagonal = scaled_laplacian(structure, edge_weight, lambda_max, spec, x.dtype)
        terms = _chebyshev(x, edges, diagonal, graph, len(weights))
        out = terms[0] @ weights[0].t()
        for term, weight in zip(terms[1:], weights[1:], strict=True):
            out.addmm_(term.to(out.dtype), weight.t().to(out.dtype))  # in out's dtype, as autocast's matmul
        save(ctx, pack(x, config, seeds, argument=True), structure, edge_weight, lambda_max, *weights)
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, grad_out):
        stored, structure, edge_weight, lambda_max, *weights = load(ctx)
        spec = ctx.spec
        graph = GraphSpec(spec.num_nodes, spec.num_nodes)
        edges, diagonal = scaled_laplacian(structure, edge_weight, lambda_max, spec, grad_out.dtype)
        terms = _chebyshev(grad_out, edges, diagonal, graph, len(weights), adjoint=True)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = terms[0] @ weights[0].to(grad_out.dtype)
            for term, weight in zip(terms[1:], weights[1:], strict=True):
                grad_x.addmm_(term, weight.to(grad_out.dtype))
        grad_weights = [
            grad.to(weight.dtype) if needed else None
            for grad, weight, needed in zip(products(stored, *terms), weights, ctx.needs_input_grad[7:], strict=True)
        ]
        return grad_x, None, None, None, None, None, None, *grad_weights
