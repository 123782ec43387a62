r"""GATv2 attention and aggregation, keeping compressed features, the attention
weights and one sign bit per edge element."""

from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..graph import edge_chunks
from ..quant import pack_mask, unpack_mask
from ..seeds import SeedStream
from .attention import (
    AttentionSpec,
    dropped_weights,
    message_grads,
    pack_weights,
    redropped_weights,
    segment_softmax,
    unpack_weights,
    weighted_sum,
)
from .saving import SavingFunction, load, pack, save, unpack


def _scores(source, target, att, src, dst, valid, negative_slope: float):
    r"""``(logits, positive)``: :math:`\ell_e = \langle \mathrm{LeakyReLU}(X'_{s(e)} + T'_{t(e)}), a \rangle`
    :math:`(E, H)` (:math:`-\infty` on edges not ``valid``) and where
    :math:`X'_{s(e)} + T'_{t(e)} > 0`, :math:`(E, H, C)` booleans, one edge chunk at a time."""
    # promoted as GATv2Conv's (x * att).sum(-1): float32 for bf16 features under autocast
    logits = source.new_empty(src.numel(), source.shape[1], dtype=torch.promote_types(source.dtype, att.dtype))
    positive = torch.empty(src.numel(), *source.shape[1:], dtype=torch.bool, device=source.device)
    for part in edge_chunks(src.numel(), source.shape[1] * source.shape[2]):
        summed = source.index_select(0, src[part]) + target.index_select(0, dst[part])
        positive[part] = summed > 0
        logits[part] = (torch.nn.functional.leaky_relu(summed, negative_slope) * att).sum(-1)
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
    return logits, positive


class GATv2AttentionFunction(SavingFunction):
    r"""Multi-head GATv2 attention (GATv2Conv) after its linear maps, source
    features :math:`X' = X_s W_l^\top` and target features :math:`T' = X_t W_r^\top`:

    .. math::
        z_e = \mathrm{LeakyReLU}(X'_{s(e)} + T'_{t(e)}),\quad
        \alpha_e = \mathrm{softmax}_{e \to t}(\langle z_e, a \rangle),\quad
        Y_t = \sum_{e: s \to t} \tilde\alpha_e X'_s,

    per head, with :math:`\tilde\alpha = \alpha \cdot m / (1-p)` after
    dropout; ``target`` is ``None`` when ``spec.targets`` is ``"shared"``
    (:math:`T' = X'`: one ``lin`` on a tensor, ``share_weights=True``).

    Backward with :math:`\delta_e = \langle dY_t, \hat X'^{(1)}_s \rangle m_e / (1-p)`:
    :math:`d\ell_e = \alpha_e (\delta_e - \sum_{e' \to t} \alpha_{e'} \delta_{e'})`,
    :math:`ds_e = d\ell_e\, a \odot \sigma_e` with :math:`\sigma_e` the
    LeakyReLU slope (1 or the negative slope) of each element, scattered to
    :math:`dX'_{s(e)}` and :math:`dT'_{t(e)}`; :math:`dX' \mathrel{+}= \sum \tilde\alpha\, dY`;
    :math:`da = \sum_e d\ell_e\, \hat z_e` with
    :math:`\hat z_e = \sigma_e \odot (\hat X'^{(2)}_{s(e)} + \hat T'_{t(e)})`.

    **Unbiased.** :math:`z_e` is not linear in the features, but it is once
    the sign of its argument is known: :math:`z_e = \sigma_e \odot (X'_s + T'_t)`.
    Keeping the signs exactly (one bit per element) makes :math:`\hat z_e`
    an unbiased estimate, where a LeakyReLU of decompressed features would
    flip the slope wherever the noise crosses zero. :math:`da` multiplies
    :math:`d\ell` (which reads :math:`\hat X'^{(1)}`) by :math:`\hat z`, so
    :math:`\hat z` reads a second copy compressed with an independent seed
    (with a shared ``lin`` for both its terms) and the separate :math:`T'`,
    which :math:`d\ell` never reads. :math:`\alpha` is kept compressed,
    not recomputed (a softmax of compressed features would be biased): twice,
    since :math:`d\ell_e` multiplies :math:`\alpha_e` by a sum holding
    :math:`\alpha_e` (:func:`~iexact.autograd.attention.softmax_grad`);
    :math:`dX'` and :math:`\delta` read the first copy linearly.

    Stores: :math:`X'` compressed twice and a separate :math:`T'` once
    (never projected: they enter per-edge sums), :math:`\alpha` :math:`(E, H)`
    compressed twice (never projected), the signs (:math:`\lceil E H C / 8
    \rceil` bytes) and the dropout's mask (its bits, or the generator
    snapshot: ``dropout_masks``). The edge list with self-loops is rebuilt
    in backward from the caller's graph.

    Shapes:
        - **input:** :math:`X'` :math:`(N_s, H, C)`, :math:`T'` :math:`(N_t, H, C)`,
          :math:`a` :math:`(1, H, C)`
        - **output:** :math:`(N_t, H, C)`
    """

    @staticmethod
    def forward(
        ctx,
        source,
        target,
        att,
        structure,
        spec: AttentionSpec,
        negative_slope: float,
        dropout: float,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ):
        src, dst, valid = spec.edges(structure)
        targets = source if spec.targets == "shared" else target
        logits, positive = _scores(source, targets, att, src, dst, valid, negative_slope)
        weights = segment_softmax(logits, dst, spec.num_dst)
        del logits
        ctx.bits = config.keeps_dropout_bits(weights.device)
        held, dropped = dropped_weights(weights, dropout, ctx.bits, valid)
        elementwise = config.unprojected
        separate = pack(target, elementwise, seeds, argument=True) if spec.targets == "separate" else None
        save(
            ctx,
            structure,
            att,
            pack(source, elementwise, seeds, argument=True),
            pack(source, elementwise, seeds, argument=True),
            separate,
            *pack_weights(weights, config, seeds),
            pack_mask(positive),
            held,
        )
        ctx.spec, ctx.slope, ctx.dropout, ctx.shape = spec, negative_slope, dropout, positive.shape
        return weighted_sum(source, src, dst, dropped, spec.num_dst)

    @staticmethod
    def backward(ctx, grad_out):
        structure, att, first, second, separate, weights, weights_again, signs, held = load(ctx)
        spec = ctx.spec
        src, dst, valid = spec.edges(structure)
        weights, weights_again = unpack_weights(weights, weights_again, grad_out.dtype)
        mask, dropped = redropped_weights(weights, ctx.dropout, held, ctx.bits, valid)
        values = unpack(first).to(grad_out.dtype)
        grad_source, grad_logits = message_grads(
            grad_out, values, weights, mask, dropped, src, dst, spec, weights_again
        )
        features = unpack(second).to(grad_out.dtype)
        targets = features if separate is None else unpack(separate).to(grad_out.dtype)
        grad_target = grad_source if spec.targets == "shared" else torch.zeros_like(targets)
        positive = unpack_mask(signs, ctx.shape)
        grad_att = torch.zeros_like(att, dtype=grad_out.dtype)
        att = att.to(grad_out.dtype)
        for part in edge_chunks(src.numel(), att.numel()):
            slope = torch.where(positive[part], 1.0, ctx.slope).to(grad_out.dtype)
            scaled = grad_logits[part].unsqueeze(-1) * slope  # dl_e σ_e
            grad_summed = scaled * att
            grad_source.index_add_(0, src[part], grad_summed)
            grad_target.index_add_(0, dst[part], grad_summed)
            summed = features.index_select(0, src[part]) + targets.index_select(0, dst[part])
            grad_att += (scaled * summed).sum(0, keepdim=True)
        return (
            grad_source,
            None if spec.targets == "shared" else grad_target,
            grad_att,
            None,
            None,
            None,
            None,
            None,
            None,
        )
