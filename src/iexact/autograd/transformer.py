r"""Graph-transformer attention (TransformerConv) and its gated skip, keeping
compressed queries, keys, values and edge features and exact attention weights."""

from __future__ import annotations

import math

from ..config import CompressionConfig
from ..graph import edge_chunks, edge_dots
from ..seeds import SeedStream
from .attention import (
    AttentionSpec,
    dropped_weights,
    pack_weights,
    redropped_weights,
    segment_softmax,
    softmax_grad,
    unpack_weights,
    weighted_sum,
)
from .saving import SavingFunction, load, pack, save, unpack


def _edge_terms(edge, dst, weight, num_dst):
    r""":math:`Z_t = \sum_{e \to t} w_e E_e` for per-edge features :math:`E`
    :math:`(E, H, C)` and weights :math:`(E, H)`, edge chunk by edge chunk."""
    out = edge.new_zeros(num_dst, *edge.shape[1:])
    for part in edge_chunks(dst.numel(), math.prod(edge.shape[1:])):
        out.index_add_(0, dst[part], edge[part] * weight[part].unsqueeze(-1))
    return out


class TransformerAttentionFunction(SavingFunction):
    r"""Multi-head dot-product attention over a graph (TransformerConv) after
    its linear maps: queries :math:`Q` of the targets, keys :math:`K` and
    values :math:`V` of the sources, optional edge features :math:`E_e`
    (``lin_edge`` of the edge attributes, added to the key and the value):

    .. math::
        \alpha_e = \mathrm{softmax}_{e \to t}\Big(\frac{\langle Q_t, K_{s} + E_e \rangle}{\sqrt C}\Big),\quad
        Y_t = \sum_{e: s \to t} \tilde\alpha_e (V_s + E_e),

    per head, with :math:`\tilde\alpha = \alpha \cdot m / (1-p)` after dropout.

    Backward with :math:`\delta_e = \langle dY_t, \hat V_s + \hat E^{(1)}_e \rangle m_e / (1-p)`
    and :math:`d\ell_e = \alpha_e (\delta_e - \sum_{e' \to t} \alpha_{e'} \delta_{e'}) / \sqrt C`:
    :math:`dV_s = \sum_{e: s \to t} \tilde\alpha_e dY_t`,
    :math:`dQ_t = \sum_{e \to t} d\ell_e (\hat K_s + \hat E^{(2)}_e)`,
    :math:`dK_s = \sum_{e: s \to t} d\ell_e \hat Q_t`,
    :math:`dE_e = \tilde\alpha_e dY_t + d\ell_e \hat Q_t`.

    **Unbiased.** Each gradient multiplies :math:`d\ell` (which reads
    :math:`\hat V` and the first copy of :math:`\hat E`) by a tensor
    compressed with another seed (:math:`\hat K`, :math:`\hat Q`, the second
    copy of :math:`\hat E`), never by itself. :math:`\alpha` is kept
    compressed twice: :math:`d\ell_e` multiplies :math:`\alpha_e` by a sum
    holding :math:`\alpha_e`; :math:`dV`, :math:`dE` and :math:`\delta` read
    the first copy linearly.

    Stores: :math:`Q, K, V` compressed once each and :math:`E` twice (never
    projected: they enter per-edge dot products), :math:`\alpha` :math:`(E, H)`
    compressed twice (:func:`~iexact.autograd.attention.softmax_grad`
    multiplies two copies) and the dropout's mask (its bits, or the
    generator snapshot: ``dropout_masks``).

    Shapes:
        - **input:** :math:`Q` :math:`(N_t, H, C)`, :math:`K, V` :math:`(N_s, H, C)`,
          :math:`E` :math:`(E, H, C)` or ``None``
        - **output:** :math:`(N_t, H, C)`
    """

    @staticmethod
    def forward(
        ctx,
        query,
        key,
        value,
        edge,
        structure,
        spec: AttentionSpec,
        dropout: float,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ):
        src, dst, _ = spec.edges(structure)
        scale = 1 / math.sqrt(query.shape[-1])
        logits = edge_dots(query, key, src, dst)
        if edge is not None:
            logits += _dots(edge, query, dst)
        weights = segment_softmax(logits.mul_(scale), dst, spec.num_dst)
        del logits
        ctx.bits = config.keeps_dropout_bits(weights.device)
        held, dropped = dropped_weights(weights, dropout, ctx.bits)
        out = weighted_sum(value, src, dst, dropped, spec.num_dst)
        if edge is not None:
            out += _edge_terms(edge, dst, dropped, spec.num_dst)
        elementwise = config.unprojected
        copies = [None, None] if edge is None else [pack(edge, elementwise, seeds, argument=True) for _ in range(2)]
        save(
            ctx,
            structure,
            pack(query, elementwise, seeds, argument=True),
            pack(key, elementwise, seeds, argument=True),
            pack(value, elementwise, seeds, argument=True),
            *copies,
            *pack_weights(weights, config, seeds),
            held,
        )
        ctx.spec, ctx.dropout, ctx.scale = spec, dropout, scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        structure, query, key, value, first_edge, second_edge, weights, weights_again, held = load(ctx)
        spec = ctx.spec
        src, dst, _ = spec.edges(structure)
        weights, weights_again = unpack_weights(weights, weights_again, grad_out.dtype)
        mask, dropped = redropped_weights(weights, ctx.dropout, held, ctx.bits)
        grad_value = weighted_sum(grad_out, dst, src, dropped, spec.num_src)
        grad_dropped = edge_dots(grad_out, unpack(value).to(grad_out.dtype), src, dst)
        edge = None if first_edge is None else unpack(first_edge).to(grad_out.dtype)
        if edge is not None:
            grad_dropped += _dots(edge, grad_out, dst)
        grad_logits = softmax_grad(grad_dropped, weights, mask, dst, spec.num_dst, weights_again).mul_(ctx.scale)
        queries = unpack(query).to(grad_out.dtype)
        grad_query = weighted_sum(unpack(key).to(grad_out.dtype), src, dst, grad_logits, spec.num_dst)
        grad_key = weighted_sum(queries, dst, src, grad_logits, spec.num_src)
        grad_edge = None
        if edge is not None:
            del edge
            grad_query += _edge_terms(unpack(second_edge).to(grad_out.dtype), dst, grad_logits, spec.num_dst)
            grad_edge = _gathered(grad_out, dst, dropped) + _gathered(queries, dst, grad_logits)
        return grad_query, grad_key, grad_value, grad_edge, None, None, None, None, None


def _dots(edge, nodes, dst):
    r""":math:`\langle E_e, N_{t(e)} \rangle` per edge and head, :math:`(E, H)`."""
    out = edge.new_empty(edge.shape[:2])
    for part in edge_chunks(edge.shape[0], math.prod(edge.shape[1:])):
        out[part] = (edge[part] * nodes.index_select(0, dst[part])).sum(-1)
    return out


def _gathered(nodes, dst, weight):
    r""":math:`w_e N_{t(e)}` per edge, :math:`(E, H, C)`."""
    return nodes.index_select(0, dst) * weight.unsqueeze(-1)


class GateFunction(SavingFunction):
    r"""TransformerConv's gated skip, :math:`Y = \beta \odot R + (1 - \beta) \odot O`
    for a gate :math:`\beta` :math:`(N, 1)` and the skip :math:`R` and
    attention output :math:`O` :math:`(N, F)`.

    Backward: :math:`dR = \beta\, dY`, :math:`dO = (1 - \beta)\, dY` (exact),
    :math:`d\beta_n = \sum_f dY_{nf} \widehat{(R - O)}_{nf}`, linear in the one
    compressed tensor it reads, so unbiased.

    Stores: :math:`\beta` (float32, one per node) and :math:`R - O` compressed
    (never projected: it enters a per-row dot product).
    """

    @staticmethod
    def forward(ctx, beta, skip, out, config: CompressionConfig, seeds: SeedStream | None):
        difference = skip - out
        save(ctx, beta, pack(difference, config.unprojected, seeds))
        return out + beta * difference

    @staticmethod
    def backward(ctx, grad_out):
        beta, difference = load(ctx)
        grad_beta = (grad_out * unpack(difference).to(grad_out.dtype)).sum(-1, keepdim=True)
        grad_skip = grad_out * beta
        return grad_beta, grad_skip, grad_out - grad_skip, None, None
