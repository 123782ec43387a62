r"""Relational graph convolution (R-GCN): one aggregation per relation, the node features stored once."""

from __future__ import annotations

import dataclasses

import torch

from ..config import CompressionConfig
from ..graph import Edges, GraphSpec, spmm, spmm_adjoint
from ..seeds import SeedStream
from .precision import matmul_dtype
from .saving import SavingFunction, load, pack_source_and_root, products, save, unpack


def typed_edges(edge_index: torch.Tensor, edge_type: torch.Tensor, spec: GraphSpec, relations: int) -> Edges:
    r"""The edges :math:`s \to t` of ``edge_index`` (read as ``spec.flow``
    says) led to target :math:`t R + r(e)`: one row of :math:`R N_t` per target and
    relation, so one :func:`~iexact.graph.spmm` of ``spec`` over :math:`R N_t`
    targets gives every :math:`A_r X` at once, each mean over its own relation's edges."""
    source, target = (0, 1) if spec.flow == "source_to_target" else (1, 0)
    return Edges(edge_index[source], edge_index[target] * relations + edge_type.to(edge_index.dtype))


class RelationalFunction(SavingFunction):
    r""":math:`Y = \sum_r (A_r X_s) W_r + X_t W_0`, :math:`A_r` the mean (or
    sum) over the incoming edges of relation :math:`r` (R-GCN, Schlichtkrull
    et al. 2018), computed as one aggregation into :math:`R N_t` rows
    (:func:`typed_edges`) and one product by the stacked :math:`W` of
    :math:`R \cdot D` rows, keeping :math:`X_s` (and a separate
    :math:`X_t`) compressed once for every relation:

    .. math::
        dW_r = (A_r \hat X_s)^\top dY, \qquad dW_0 = \hat X_t^\top dY, \qquad
        dX_s = \textstyle\sum_r A_r^\top (dY W_r^\top) \; [+ dY W_0^\top], \qquad
        dX_t = dY W_0^\top,

    (the bracket when :math:`X_t` is :math:`X_s`). The weights' gradients are
    linear in :math:`\hat X`: unbiased.

    Forward arguments beside the tensors of the formulas:
        ``root`` is :math:`X_t`, or ``None`` for :math:`X_s` itself (stored
        once); ``weight_root`` is :math:`W_0`, or ``None`` for no root term.

    Stores: :math:`X_s` compressed (and :math:`X_t` when it is another
    tensor), references to the weights, ``edge_index`` and ``edge_type``.

    Shapes:
        - **input:** :math:`X_s` :math:`(N_s, D)`, :math:`X_t` :math:`(N_t, D)`,
          ``weight`` :math:`(R, D, F)`, ``weight_root`` :math:`(D, F)`,
          ``edge_index`` :math:`(2, E)`, ``edge_type`` :math:`(E,)`
        - **output:** :math:`(N_t, F)`
    """

    @staticmethod
    def forward(
        ctx,
        source: torch.Tensor,
        root: torch.Tensor | None,
        weight: torch.Tensor,
        weight_root: torch.Tensor | None,
        edge_index: torch.Tensor,
        edge_type: torch.Tensor,
        spec: GraphSpec,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ) -> torch.Tensor:
        relations, width, channels = weight.shape
        packed_source, packed_root = pack_source_and_root(source, root, weight, weight_root, config, seeds)
        save(ctx, packed_source, packed_root, weight, weight_root, edge_index, edge_type)
        ctx.spec, ctx.own_root = spec, root is not None
        dtype = matmul_dtype(source, weight)  # under autocast its dtype, as the stock products'
        typed = dataclasses.replace(spec, num_dst=spec.num_dst * relations)
        aggregated = spmm(source, typed_edges(edge_index, edge_type, spec, relations), typed)
        stacked = weight.reshape(relations * width, channels).to(dtype)  # W_1 .. W_R, one below the other
        out = aggregated.view(spec.num_dst, relations * width).to(dtype) @ stacked
        if weight_root is not None:
            out += (source if root is None else root).to(dtype) @ weight_root.to(dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        packed_source, packed_root, weight, weight_root, edge_index, edge_type = load(ctx)
        spec, needs = ctx.spec, ctx.needs_input_grad
        relations, width, channels = weight.shape
        edges = typed_edges(edge_index, edge_type, spec, relations)
        typed = dataclasses.replace(spec, num_dst=spec.num_dst * relations)
        grad_source = grad_root = grad_weight = grad_weight_root = None
        if needs[2]:
            restored = unpack(packed_source).to(grad_out.dtype)
            aggregated = spmm(restored, edges, typed).view(spec.num_dst, relations * width)
            del restored
            grad_weight = (aggregated.t() @ grad_out).view(weight.shape).to(weight.dtype)
            del aggregated
        if weight_root is not None and needs[3]:
            kept = packed_root if ctx.own_root else packed_source
            grad_weight_root = products(kept, grad_out)[0].t().to(weight_root.dtype)
        if needs[1]:
            grad_root = grad_out @ weight_root.to(grad_out.dtype).t()
        if needs[0]:
            per_relation = grad_out @ weight.to(grad_out.dtype).reshape(relations * width, channels).t()  # (N_t, R D)
            into = None if weight_root is None or ctx.own_root else grad_out @ weight_root.to(grad_out.dtype).t()
            grad_source = spmm_adjoint(per_relation.view(typed.num_dst, width), edges, typed, into=into)
        return grad_source, grad_root, grad_weight, grad_weight_root, None, None, None, None, None
