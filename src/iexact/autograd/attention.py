r"""GAT attention and aggregation, keeping compressed features and weights."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import CompressionConfig
from ..graph import attention_edges, edge_chunks, edge_dots
from ..seeds import SeedStream
from .dropout import keep_for_backward, restored_mask
from .saving import SavingFunction, load, pack, save, unpack


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    r"""Graph reading for attention: source and target node counts, PyG flow,
    whether self-loops are (re)added (for the first :math:`\min(N_s, N_t)`
    nodes, as GATConv adds them), whether the graph is a ``torch.sparse``
    adjacency, and where the target scores come from: the source features
    (``"shared"``), ``"separate"`` target features, or ``"none"``."""

    num_src: int
    num_dst: int
    flow: str = "source_to_target"
    self_loops: bool = True
    sparse: bool = False
    targets: str = "shared"  # target scores from the source features, "separate" ones, or "none"

    def edges(self, structure: torch.Tensor):
        """``(src, dst, valid)`` of :func:`~iexact.graph.attention_edges`."""
        return attention_edges(structure, min(self.num_src, self.num_dst), self.flow, self.self_loops, self.sparse)


def weighted_sum(x, src, dst, weight, num_dst):
    r""":math:`Y_{t,h} = \sum_{e: s \to t} w_{e,h} X_{s,h}` for :math:`X` :math:`(N, H, C)` and
    :math:`w` :math:`(E, H)`."""
    out = x.new_zeros(num_dst, *x.shape[1:], dtype=torch.promote_types(x.dtype, weight.dtype))
    for part in edge_chunks(src.numel(), math.prod(x.shape[1:])):
        out.index_add_(0, dst[part], x.index_select(0, src[part]) * weight[part].unsqueeze(-1))
    return out


def dropped_weights(weights, dropout: float, bits: bool, valid=None):
    r"""``(held, dropped)``: dropout of the attention weights :math:`\alpha`
    :math:`(E, H)` as PyG applies it (``valid`` rows only), :math:`\tilde\alpha
    = \alpha m`, and what backward restores :math:`m` from (its bits with
    ``bits``, else the generator snapshot:
    :func:`~iexact.autograd.dropout.keep_for_backward`)."""
    mask, held = keep_for_backward(weights, dropout, bits, valid)
    return held, weights if mask is None else weights * mask


def redropped_weights(weights, dropout: float, held, bits: bool, valid=None):
    r"""``(mask, dropped)`` of :func:`dropped_weights`, the mask restored in
    backward from ``held`` (:func:`~iexact.autograd.dropout.restored_mask`)."""
    mask = restored_mask(weights, dropout, held, bits, valid)
    return mask, weights if mask is None else weights * mask


def message_grads(grad_out, values, weights, mask, dropped, src, dst, spec: AttentionSpec, second=None):
    r"""``(dV, dℓ)`` of :math:`Y_t = \sum_{e: s \to t} \tilde\alpha_e V_{s(e)}`,
    :math:`\alpha = \mathrm{softmax}(\ell)`: :math:`dV_s = \sum_{e: s \to t}
    \tilde\alpha_e dY_t` and, from :math:`d\tilde\alpha_e = \langle dY_t, V_s \rangle`,
    the logits' gradient (:func:`softmax_grad`, ``second`` its second copy of
    :math:`\alpha`). ``values`` is :math:`\hat V` in ``grad_out``'s dtype."""
    grad_values = weighted_sum(grad_out, dst, src, dropped, spec.num_src)
    grad_dropped = edge_dots(grad_out, values, src, dst)
    return grad_values, softmax_grad(grad_dropped, weights, mask, dst, spec.num_dst, second)


def segment_softmax(logits, dst, num_nodes):
    """Softmax of ``logits`` :math:`(E, H)` over the edges into each target node."""
    peak = logits.new_full((num_nodes, logits.shape[1]), float("-inf"))
    peak.scatter_reduce_(0, dst.unsqueeze(1).expand_as(logits), logits, "amax", include_self=True)
    weights = (logits - peak.index_select(0, dst)).exp_()
    total = logits.new_zeros(num_nodes, logits.shape[1]).index_add_(0, dst, weights)
    return weights.div_(total.index_select(0, dst))


def softmax_grad(grad_dropped, weights, mask, dst, num_dst: int, second=None):
    r""":math:`d\ell_e = \alpha_e (\delta_e - \sum_{e' \to t} \alpha_{e'} \delta_{e'})`, the
    gradient of the logits of a softmax over the edges into each target whose
    weights :math:`\alpha` :math:`(E, H)` weighed the messages after dropout's
    scaled keep-mask :math:`m` (``None`` without dropout), with
    :math:`\delta = ` ``grad_dropped`` :math:`\cdot m` the gradient of the
    dropped weights. With compressed weights the sum reads ``second``, a copy
    compressed independently of ``weights`` (:math:`\alpha_e` multiplies a
    sum holding :math:`\alpha_e` itself: one copy in both would add its
    variance)."""
    grad_weights = grad_dropped * mask if mask is not None else grad_dropped
    weighted = weights * grad_weights
    summed = weighted if second is None else second * grad_weights
    per_target = summed.new_zeros(num_dst, summed.shape[1]).index_add_(0, dst, summed)
    return weighted - weights * per_target.index_select(0, dst)


def pack_weights(weights, config: CompressionConfig, seeds: SeedStream | None) -> tuple:
    r"""Two independent compressions of the attention weights :math:`\alpha`
    :math:`(E, H)` (:func:`softmax_grad` reads both; :math:`dV` the first),
    with ``config.attention_weights``: never projected, at least
    :data:`~iexact.config.ATTENTION_WEIGHT_BITS` bits."""
    return pack(weights, config.attention_weights, seeds), pack(weights, config.attention_weights, seeds)


def unpack_weights(first, second, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The two copies :func:`pack_weights` kept, in ``dtype``."""
    return unpack(first).to(dtype), unpack(second).to(dtype)


def _attention(source_score, target_score, src, dst, valid, num_nodes: int, negative_slope: float):
    r"""``(weights, positive)``: :math:`\alpha_e = \mathrm{softmax}_{e \to t}(\mathrm{LeakyReLU}(a_{s(e)} + b_{t(e)}))`
    (0 on edges not ``valid``; :math:`b = 0` when ``target_score`` is ``None``)
    and where the logit was positive, :math:`(E, H)` each."""
    logits = source_score.index_select(0, src)
    if target_score is not None:
        logits = logits + target_score.index_select(0, dst)
    positive = logits > 0
    logits = torch.where(positive, logits, logits * negative_slope)
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
    return segment_softmax(logits, dst, num_nodes), positive


class GATAttentionFunction(SavingFunction):
    r"""Multi-head graph attention (GATConv) after its linear maps, source
    features :math:`X' = X_s W_s^\top` and target features :math:`T' = X_t W_t^\top`:

    .. math::
        a_n = \langle X'_n, a^{src} \rangle,\; b_n = \langle T'_n, a^{dst} \rangle,\quad
        \alpha_e = \mathrm{softmax}_{e \to t}\big(\mathrm{LeakyReLU}(a_{s(e)} + b_{t(e)})\big),\quad
        Y_t = \sum_{e: s \to t} \tilde\alpha_e X'_s,

    per head, with :math:`\tilde\alpha = \alpha \cdot m / (1-p)` after
    dropout. ``target`` is ``None`` when ``spec.targets`` is ``"shared"``
    (:math:`T' = X'`: GATConv's shared ``lin`` on a tensor) or ``"none"`` (the
    pair ``(x_s, None)``: :math:`b = 0`); one tensor is never passed twice,
    which ``torch.compile`` could not trace without a break.

    Backward with :math:`\delta_e = \langle dY_t, \hat X'^{(1)}_s \rangle m_e / (1-p)`:
    :math:`d\ell_e = \alpha_e (\delta_e - \sum_{e' \to t} \alpha_{e'} \delta_{e'})`
    times the LeakyReLU slope, scattered to :math:`da, db`; then
    :math:`dX' = da\, a^{src} + \sum \tilde\alpha\, dY`, :math:`dT' = db\, a^{dst}`,
    :math:`da^{src} = \sum_n da_n \hat X'^{(2)}_n` and :math:`da^{dst} = \sum_n db_n \hat T'_n`.

    **Unbiased.** The attention gradient is quadratic in :math:`X'`
    (:math:`\delta` reads it, then multiplies it again), so one compressed
    copy would give :math:`\mathbb{E}[\hat X'^2] = X'^2 + \mathrm{Var}`:
    a bias. Two copies compressed with independent seeds enter one factor
    each, so :math:`\mathbb{E}[da^{src}]` is exact; a separate :math:`T'`
    enters :math:`da^{dst}` once, beside :math:`db` (which reads
    :math:`\hat X'^{(1)}`), so one copy of it is unbiased too. :math:`\alpha`
    itself is not stored: it is recomputed exactly from the per-node scores
    :math:`a, b` (float32), cheaper than compressed per-edge weights wherever
    the mean degree exceeds ~20, and never a source of error.

    Stores: :math:`X'` compressed twice and a separate :math:`T'` once (never
    projected: they enter per-edge dot products), :math:`a, b`
    (:math:`4 (N_s + N_t) H` bytes) and the dropout's mask (its bits, or
    the generator snapshot: ``dropout_masks``). The edge list with
    self-loops is rebuilt in backward from the caller's graph.

    Shapes:
        - **input:** :math:`X'` :math:`(N_s, H, C)`, :math:`T'` :math:`(N_t, H, C)`,
          :math:`a^{src}, a^{dst}` :math:`(1, H, C)`
        - **output:** :math:`(N_t, H, C)`
    """

    @staticmethod
    def forward(
        ctx,
        source,
        target,
        att_src,
        att_dst,
        structure,
        spec: AttentionSpec,
        negative_slope: float,
        dropout: float,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ):
        src, dst, valid = spec.edges(structure)
        source_score = (source * att_src).sum(-1)
        target_score = (
            None if spec.targets == "none" else ((source if spec.targets == "shared" else target) * att_dst).sum(-1)
        )
        weights, _ = _attention(source_score, target_score, src, dst, valid, spec.num_dst, negative_slope)
        ctx.bits = config.keeps_dropout_bits(weights.device)
        held, dropped = dropped_weights(weights, dropout, ctx.bits, valid)
        elementwise = config.unprojected
        separate = pack(target, elementwise, seeds, argument=True) if spec.targets == "separate" else None
        save(
            ctx,
            structure,
            att_src,
            att_dst,
            pack(source, elementwise, seeds, argument=True),
            pack(source, elementwise, seeds, argument=True),
            separate,
            source_score,
            target_score,
            held,
        )
        ctx.spec, ctx.slope, ctx.dropout = spec, negative_slope, dropout
        return weighted_sum(source, src, dst, dropped, spec.num_dst)

    @staticmethod
    def backward(ctx, grad_out):
        structure, att_src, att_dst, first, second, separate, source_score, target_score, held = load(ctx)
        spec = ctx.spec
        src, dst, valid = spec.edges(structure)
        weights, positive = _attention(source_score, target_score, src, dst, valid, spec.num_dst, ctx.slope)
        weights = weights.to(grad_out.dtype)
        mask, dropped = redropped_weights(weights, ctx.dropout, held, ctx.bits, valid)
        values = unpack(first).to(grad_out.dtype)
        grad_source, grad_logits = message_grads(grad_out, values, weights, mask, dropped, src, dst, spec)
        grad_logits = torch.where(positive, grad_logits, grad_logits * ctx.slope)
        grad_a = grad_logits.new_zeros(spec.num_src, grad_logits.shape[1]).index_add_(0, src, grad_logits)
        grad_source += grad_a.unsqueeze(-1) * att_src
        features = unpack(second).to(grad_out.dtype)
        grad_att_src = (grad_a.unsqueeze(-1) * features).sum(0, keepdim=True)
        grad_target = grad_att_dst = None
        if target_score is not None:
            grad_b = grad_logits.new_zeros(spec.num_dst, grad_logits.shape[1]).index_add_(0, dst, grad_logits)
            if spec.targets == "shared":
                grad_source += grad_b.unsqueeze(-1) * att_dst
            else:
                grad_target = grad_b.unsqueeze(-1) * att_dst
                features = unpack(separate).to(grad_out.dtype)
            grad_att_dst = (grad_b.unsqueeze(-1) * features).sum(0, keepdim=True)
        return grad_source, grad_target, grad_att_src, grad_att_dst, None, None, None, None, None, None
