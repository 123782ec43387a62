r"""GraphSAGE's two linear maps and its aggregation over a CSR adjacency, target rows a slice at a time."""

from __future__ import annotations

import dataclasses

import torch

from ..config import CompressionConfig
from ..graph import GraphSpec, csr_row_chunks, spmm, spmm_adjoint
from ..seeds import SeedStream
from .precision import matmul_dtype
from .saving import SavingFunction, load, pack_source_and_root, products, save, unpack


class RowChunkedSAGEFunction(SavingFunction):
    r""":math:`Y = X_t W_r^\top + (A X_s) W_l^\top`, for a ``torch.sparse`` CSR
    :math:`A` (targets by sources, the mean's :math:`1 / c_t` included),
    keeping :math:`X_s` (and a separate :math:`X_t`) compressed once.

    Whole :math:`(N, F)` tensors are never more than two at a time: forward
    fills :math:`Y` with :math:`X_t W_r^\top` and adds
    :math:`(A_c X_s) W_l^\top` slice by slice of target rows :math:`c`
    (:func:`~iexact.graph.csr_row_chunks`), where
    :math:`A (X_s W_l^\top)` would hold :math:`X_s`, :math:`X_s W_l^\top`
    and :math:`Y`. Backward, the same way:

    .. math::
        dW_l = \textstyle\sum_c dY_c^\top (A_c \hat X_s), \qquad
        dW_r = dY^\top \hat X_t, \qquad
        dX_s = [dY W_r] + \textstyle\sum_c A_c^\top (dY_c W_l), \qquad
        dX_t = dY W_r,

    (the bracket when :math:`X_t` is :math:`X_s`), with :math:`\hat X_s`
    restored whole for :math:`dW_l` and freed before :math:`dX_s` is made.
    :math:`dW_l` is the same estimate as :math:`(A^\top dY)^\top \hat X_s`,
    at one more sparse product (the price of the buffer it saves).

    Eager only (each slice reads its edge range from the host): callers use
    :class:`~iexact.autograd.AggregateFunction` under ``torch.compile``.

    Forward arguments beside the tensors of the formulas:
        ``root`` is :math:`X_t`, or ``None`` for :math:`X_s` itself (stored
        once); ``weight_r`` is :math:`W_r`, or ``None`` for no root term.

    Stores: :math:`X_s` compressed (and :math:`X_t` when it is another
    tensor), references to the weights and to ``adj_t`` (the caller's).

    Shapes:
        - **input:** :math:`X_s` :math:`(N_s, D)`, :math:`X_t` :math:`(N_t, D)`,
          :math:`W_l`, :math:`W_r` :math:`(F, D)`, ``adj_t`` :math:`(N_t, N_s)`
        - **output:** :math:`(N_t, F)`
    """

    @staticmethod
    def forward(
        ctx,
        source: torch.Tensor,
        root: torch.Tensor | None,
        weight_l: torch.Tensor,
        weight_r: torch.Tensor | None,
        adj_t: torch.Tensor,
        spec: GraphSpec,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ) -> torch.Tensor:
        packed_source, packed_root = pack_source_and_root(source, root, weight_l, weight_r, config, seeds)
        save(ctx, packed_source, packed_root, weight_l, weight_r, adj_t)
        ctx.spec, ctx.own_root = spec, root is not None
        dtype = matmul_dtype(source, weight_l)  # under autocast its dtype, as the stock lin_l's
        if weight_r is None:
            out = source.new_zeros(spec.num_dst, weight_l.shape[0], dtype=dtype)
        else:
            out = torch.nn.functional.linear(source if root is None else root, weight_r)
        weight_t = weight_l.t().to(dtype)
        for rows, aggregated in _aggregated_slices(source, adj_t, spec, weight_l):
            out[rows].addmm_(aggregated.to(dtype), weight_t)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        packed_source, packed_root, weight_l, weight_r, adj_t = load(ctx)
        spec, needs = ctx.spec, ctx.needs_input_grad
        grad_source = grad_root = grad_l = grad_r = None
        if needs[2]:
            restored = unpack(packed_source).to(grad_out.dtype)
            grad_l = grad_out.new_zeros(weight_l.shape)
            for rows, aggregated in _aggregated_slices(restored, adj_t, spec, weight_l):
                grad_l.addmm_(grad_out[rows].t(), aggregated)
            del restored
            grad_l = grad_l.to(weight_l.dtype)
        if weight_r is not None and needs[3]:
            grad_r = products(packed_root if ctx.own_root else packed_source, grad_out)[0].to(weight_r.dtype)
        if needs[1]:
            grad_root = grad_out @ weight_r.to(grad_out.dtype)
        if needs[0]:
            if weight_r is None or ctx.own_root:
                grad_source = grad_out.new_zeros(spec.num_src, weight_l.shape[1])
            else:
                grad_source = grad_out @ weight_r.to(grad_out.dtype)
            for rows, edges in csr_row_chunks(adj_t, max(weight_l.shape)):
                sliced = dataclasses.replace(spec, num_dst=rows.stop - rows.start)
                spmm_adjoint(grad_out[rows] @ weight_l.to(grad_out.dtype), edges, sliced, into=grad_source)
        return grad_source, grad_root, grad_l, grad_r, None, None, None, None


def _aggregated_slices(x: torch.Tensor, adj_t: torch.Tensor, spec: GraphSpec, weight_l: torch.Tensor):
    r"""``(rows, A_c X)`` per slice of target rows, slices bounded for the
    wider of :math:`W_l`'s two sides (the buffers :math:`A_c X` and its product)."""
    for rows, edges in csr_row_chunks(adj_t, max(weight_l.shape)):
        yield rows, spmm(x, edges, dataclasses.replace(spec, num_dst=rows.stop - rows.start))
