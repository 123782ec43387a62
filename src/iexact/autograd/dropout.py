r"""Dropout whose keep-mask reaches backward as a snapshot of the generator
(redrawn there) or as bits (``CompressionConfig.dropout_masks``)."""

from __future__ import annotations

import torch

from ..ops.dropout import dropout_keep, dropout_redraw
from ..quant import pack_nonzero, unpacked_parts
from .saving import SavingFunction, load, save


def keep(
    like: torch.Tensor, p: float, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""``(mask, state)``: the scaled keep-mask ``torch.nn.functional.dropout``
    draws for ``like`` (for ``like[valid]`` only, when given) and the
    generator snapshot to redraw it from; ``(None, None)`` for :math:`p = 0`,
    zeros and no snapshot for :math:`p = 1` (no draw, as torch does)."""
    if p == 0:
        return None, None
    if p == 1:
        return torch.zeros_like(like), None
    return dropout_keep(like, p, valid)


def redraw(
    like: torch.Tensor, p: float, state: torch.Tensor | None, valid: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The mask :func:`keep` drew for ``like`` (laid out alike), from its ``state``."""
    if p == 0:
        return None
    if p == 1:
        return torch.zeros_like(like)
    assert state is not None  # keep() took a snapshot for 0 < p < 1
    return dropout_redraw(state, like, p, valid)


def kept_bits(mask: torch.Tensor) -> torch.Tensor:
    r"""The scaled keep-mask ``mask`` (:func:`keep`'s) at one bit per element,
    :math:`\lceil n / 8 \rceil` bytes (:func:`~iexact.quant.pack_nonzero`)."""
    return pack_nonzero(mask)


def mask_from_bits(packed: torch.Tensor, p: float, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """The scaled keep-mask :func:`kept_bits` packed, with the values :func:`keep`
    drew (ones divided by :math:`1 - p` as torch divides them), contiguous, of
    ``shape`` and ``dtype``, unpacked a slice at a time (no boolean tensor of
    the full size)."""
    mask = torch.empty(shape, dtype=dtype, device=packed.device)
    flat = mask.view(-1)
    for part, bits in unpacked_parts(packed, flat.numel()):
        flat[part] = bits
    return mask.div_(1.0 - p)


def keep_for_backward(
    like: torch.Tensor, p: float, bits: bool, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""``(mask, held)``: :func:`keep`'s mask and what backward restores it from
    (:func:`restored_mask`): its bits (:func:`kept_bits`) with ``bits``, else
    the generator snapshot; ``None`` for :math:`p \in \{0, 1\}` (no draw)."""
    mask, state = keep(like, p, valid)
    return mask, (kept_bits(mask) if bits and mask is not None and state is not None else state)


def restored_mask(
    like: torch.Tensor, p: float, held: torch.Tensor | None, bits: bool, valid: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The mask :func:`keep_for_backward` drew for ``like`` (laid out alike):
    from its bits (contiguous, ``like``'s shape and dtype), or redrawn from
    the snapshot into ``like`` (:func:`redraw`)."""
    if bits and held is not None:
        return mask_from_bits(held, p, like.shape, like.dtype)
    return redraw(like, p, held, valid)


def mask_like(grad_out: torch.Tensor, layout: tuple) -> torch.Tensor:
    """A tensor laid out as forward's mask (``(shape, stride, dtype)``), for
    :func:`restored_mask`: ``grad_out`` itself where it is, so that no buffer is
    allocated only to carry the layout (the mask is drawn into one of its own)."""
    shape, stride, dtype = layout
    if (grad_out.shape, grad_out.stride(), grad_out.dtype) == layout:
        return grad_out
    return torch.empty_strided(shape, stride, dtype=dtype, device=grad_out.device)


class DropoutFunction(SavingFunction):
    r""":math:`y = x \cdot m / (1 - p)`, :math:`m_i \sim \text{Bernoulli}(1 - p)`,
    drawn from torch's default generator exactly as ``torch.nn.functional.dropout``
    draws it (so the mask equals the FP32 model's under the same seed);
    backward redraws :math:`m` from a snapshot of the generator taken before,
    or, with ``bits``, reads it from its bits (:func:`keep_for_backward`,
    :func:`restored_mask`).

    Stores, for :math:`0 < p < 1`: the generator snapshot (5,056 bytes on
    CPU, 16 on CUDA), or with ``bits`` :math:`\lceil n / 8 \rceil` bytes;
    nothing for :math:`p \in \{0, 1\}`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, bits: bool) -> torch.Tensor:
        mask, held = keep_for_backward(x, p, bits)
        save(ctx, held)
        ctx.p, ctx.bits = p, bits
        if mask is None:
            return x.clone()
        ctx.layout = (mask.shape, mask.stride(), mask.dtype)
        return mask.mul_(x)  # in the mask's own buffer: no third (N, F) tensor beside x and the mask

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (held,) = load(ctx)
        if ctx.p == 0:
            return grad_out, None, None
        mask = restored_mask(mask_like(grad_out, ctx.layout), ctx.p, held, ctx.bits)
        assert mask is not None  # p > 0
        return (mask.mul_(grad_out) if mask.dtype == grad_out.dtype else grad_out * mask.to(grad_out.dtype)), None, None
