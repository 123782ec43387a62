r"""Residual gated graph convolution's messages (ResGatedGraphConv), keeping
the gates and their derivatives compressed."""

from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..graph import GraphSpec, edges
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack


class GatedMessageFunction(SavingFunction):
    r""":math:`Y_t = \sum_{e: s \to t} \eta_e \odot V_s` with the gates
    :math:`\eta_e = \sigma(K_t + Q_s)` (ResGatedGraphConv after its linear maps).

    Backward: :math:`dV_s = \sum_{e: s \to t} \eta_e \odot dY_t` and, with
    :math:`g_e = dY_t \odot V_s \odot \sigma'_e`,
    :math:`dK_t = \sum_{e \to t} g_e`, :math:`dQ_s = \sum_{e: s \to t} g_e`.

    **Unbiased.** :math:`dV` is linear in :math:`\hat\eta`; :math:`g_e`
    multiplies :math:`\hat V` by :math:`\hat\sigma'`, kept separately
    (:math:`\sigma' = \eta (1 - \eta)` from :math:`\hat\eta` would square its
    noise), each compressed with its own seed. Every factor is exact in
    expectation, none is recomputed through the sigmoid.

    Stores: :math:`\eta` and :math:`\sigma'` compressed (one value per edge
    and channel each, never projected, at :attr:`~iexact.CompressionConfig.gates`:
    half the bits each), :math:`V` compressed.
    The edge list is read again in backward from the caller's graph.

    Shapes:
        - **input:** :math:`K` :math:`(N_t, C)`, :math:`Q, V` :math:`(N_s, C)`
        - **output:** :math:`(N_t, C)`
    """

    @staticmethod
    def forward(
        ctx, key, query, value, structure, spec: GraphSpec, config: CompressionConfig, seeds: SeedStream | None
    ):
        graph = edges(structure, None, spec, key.dtype)
        out = key.new_zeros(spec.num_dst, key.shape[1])
        gates = key.new_empty(graph.count, key.shape[1])
        start = 0
        for src, dst, _ in graph.chunks(key.shape[1]):  # a sparse adjacency's values weigh nothing here, as in PyG
            gate = torch.sigmoid(key.index_select(0, dst) + query.index_select(0, src))
            gates[start : start + gate.shape[0]] = gate
            out.index_add_(0, dst, gate * value.index_select(0, src))
            start += gate.shape[0]
        slopes = pack(gates * (1 - gates), config.gates, seeds)
        save(
            ctx,
            structure,
            pack(gates, config.gates, seeds),
            slopes,
            pack(value, config.unprojected, seeds, argument=True),
        )
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, grad_out):
        structure, gates, slopes, value = load(ctx)
        spec = ctx.spec
        graph = edges(structure, None, spec, grad_out.dtype)
        gates, slopes = unpack(gates).to(grad_out.dtype), unpack(slopes).to(grad_out.dtype)
        value = unpack(value).to(grad_out.dtype)
        grad_key = torch.zeros_like(grad_out)
        grad_query = grad_out.new_zeros(spec.num_src, grad_out.shape[1])
        grad_value = torch.zeros_like(grad_query)
        start = 0
        for src, dst, _ in graph.chunks(grad_out.shape[1]):
            part = slice(start, start + src.numel())
            grad = grad_out.index_select(0, dst)
            grad_value.index_add_(0, src, gates[part] * grad)
            grad_logit = grad.mul_(value.index_select(0, src)).mul_(slopes[part])
            grad_key.index_add_(0, dst, grad_logit)
            grad_query.index_add_(0, src, grad_logit)
            start += src.numel()
        return grad_key, grad_query, grad_value, None, None, None, None
