r"""Dense multi-head dot-product attention (``torch.nn.MultiheadAttention`` after
its input maps), keeping compressed queries, keys, values and attention weights."""

from __future__ import annotations

import math

import torch

from ..codec import stored_bytes
from ..config import CompressionConfig
from ..seeds import SeedStream
from .attention import pack_weights, unpack_weights
from .dropout import keep_for_backward, restored_mask
from .saving import SavingFunction, load, pack, save, unpack


def _weights(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    r""":math:`A = \mathrm{softmax}(Q K^\top s + M)`, the softmax in float32 at least
    (as autocast runs it): one function for forward and its recomputation in backward."""
    logits = torch.matmul(query * scale, key.transpose(-2, -1))
    if mask is not None:
        logits = logits + mask
    return torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))


def _alone(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when it fills its storage, else a copy: a saved view would keep
    its whole base alive (the values' part of a packed input map's output)."""
    return x if x.untyped_storage().nbytes() == x.numel() * x.element_size() else x.clone()


def weights_are_smaller(query: torch.Tensor, key: torch.Tensor, config: CompressionConfig) -> bool:
    r"""Whether the attention weights compressed twice, with the queries and keys
    compressed once, keep fewer bytes than the queries and keys exact (from
    which backward recomputes the weights as the forward computed them): for
    short sequences (GPSConv's batches of small graphs) the weights,
    :math:`2 B H L S` codes, are the smaller; for long ones the exact
    :math:`B H (L + S) C` elements. Plain arithmetic on the shapes."""
    pairs = (*query.shape[:-1], key.shape[-2])
    compressed = (
        2 * stored_bytes(pairs, config.attention_weights)
        + stored_bytes(query.shape, config.unprojected)
        + stored_bytes(key.shape, config.unprojected)
    )
    return compressed < (query.numel() * query.element_size() + key.numel() * key.element_size())


class DenseAttentionFunction(SavingFunction):
    r"""Scaled dot-product attention over every key of a sequence, per batch
    element and head, as ``torch.nn.MultiheadAttention`` computes it between
    its input and output maps:

    .. math::
        A = \mathrm{softmax}\Big(\frac{Q K^\top}{\sqrt C} + M\Big),\quad
        \tilde A = A \odot m / (1 - p),\quad O = \tilde A V,

    with :math:`M` the additive mask (``-inf`` where a key is masked) and
    :math:`m` torch's own dropout mask (drawn as ``scaled_dot_product_attention``
    and ``torch.nn.functional.dropout`` draw it). Returns :math:`O` and
    :math:`\tilde A` (what ``need_weights=True`` returns; differentiable).

    Backward with :math:`\delta = (dO\, \hat V^\top + d\tilde A) \odot m / (1 - p)`:
    :math:`dV = \tilde A^\top dO`,
    :math:`dS = A \odot \delta - A \odot \big(\sum_s A'_{\cdot s} \delta_{\cdot s}\big)`,
    :math:`dQ = dS\, K / \sqrt C`, :math:`dK = dS^\top Q / \sqrt C`, where
    :math:`A, A', Q, K` are, whichever keeps fewer bytes
    (:func:`weights_are_smaller`):

    - two copies of :math:`A` compressed with independent seeds and
      :math:`\hat Q, \hat K` compressed once each. :math:`dS` multiplies
      :math:`A` by a sum holding :math:`A`, so one copy in both factors would
      add its variance; every other product pairs tensors compressed with
      different seeds (:math:`\hat V` in :math:`\delta` with :math:`\hat A`,
      :math:`dS` with :math:`\hat K` or :math:`\hat Q`);
    - or :math:`Q, K` exact and :math:`A = A'` recomputed from them and
      :math:`M`, as flash attention recomputes it: exact, so only
      :math:`\hat V` is noise.

    **Unbiased** either way: each gradient is linear in each stored draw.

    Stores: :math:`V` compressed (never projected: it enters per-pair dot
    products); then :math:`Q, K` compressed and :math:`A` compressed twice with
    :attr:`~iexact.CompressionConfig.attention_weights`, or :math:`Q, K` and
    :math:`M` as they are; the dropout's mask (its bits, or the generator
    snapshot: ``dropout_masks``).

    Shapes:
        - **input:** :math:`Q` :math:`(B, H, L, C)`, :math:`K` :math:`(B, H, S, C)`,
          :math:`V` :math:`(B, H, S, C_v)`, :math:`M` broadcastable to :math:`(B, H, L, S)` or ``None``
        - **output:** :math:`O` :math:`(B, H, L, C_v)`, :math:`\tilde A` :math:`(B, H, L, S)`
    """

    @staticmethod
    def forward(
        ctx,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        dropout: float,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ):
        scale = 1 / math.sqrt(query.shape[-1])
        weights = _weights(query, key, mask, scale)
        ctx.bits = config.keeps_dropout_bits(weights.device)
        kept, held = keep_for_backward(weights, dropout, ctx.bits)
        dropped = weights if kept is None else weights * kept
        del kept
        out = torch.matmul(dropped.to(value.dtype), value)
        elementwise = config.unprojected
        ctx.keeps_weights = weights_are_smaller(query, key, config)
        if ctx.keeps_weights:
            stored = (
                pack(query, elementwise, seeds, argument=True),
                pack(key, elementwise, seeds, argument=True),
                *pack_weights(weights, config, seeds),
                None,
            )
        else:
            stored = (_alone(query), _alone(key), None, None, mask)
        save(ctx, pack(value, elementwise, seeds, argument=True), *stored, held)
        ctx.dropout, ctx.scale = dropout, scale
        ctx.set_materialize_grads(False)
        return out, dropped

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor | None, grad_dropped: torch.Tensor | None):
        value, query, key, first, second, mask, held = load(ctx)
        reached = grad_out if grad_out is not None else grad_dropped
        assert reached is not None  # one of the two outputs reached the loss
        dtype = reached.dtype
        if ctx.keeps_weights:
            weights, weights_again = unpack_weights(first, second, dtype)
            query, key = unpack(query), unpack(key)
        else:
            weights = weights_again = _weights(query, key, mask, ctx.scale).to(dtype)
        kept = restored_mask(weights, ctx.dropout, held, ctx.bits)
        grad_value = None
        if grad_out is not None:
            dropped = weights if kept is None else weights * kept
            grad_value = torch.matmul(dropped.transpose(-2, -1), grad_out)
            del dropped
            from_out = torch.matmul(grad_out, unpack(value).to(dtype).transpose(-2, -1))
            grad_dropped = from_out if grad_dropped is None else from_out + grad_dropped
        assert grad_dropped is not None
        grad_weights = grad_dropped if kept is None else grad_dropped * kept
        summed = (weights_again * grad_weights).sum(-1, keepdim=True)
        grad_logits = (weights * grad_weights).sub_(weights * summed).mul_(ctx.scale)
        del weights, weights_again, grad_weights
        grad_query = torch.matmul(grad_logits, key.to(dtype))
        grad_key = torch.matmul(grad_logits.transpose(-2, -1), query.to(dtype))
        return grad_query, grad_key, grad_value, None, None, None, None
