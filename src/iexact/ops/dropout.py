r"""``iexact::dropout_keep`` and ``iexact::dropout_redraw``: torch's own dropout
mask after a snapshot of the default generator, and the same mask redrawn
from that snapshot. Drawn inside one op, so a compiled graph's RNG cannot come
between the snapshot and the draw.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..seeds import generator_state, keep_mask
from .direct import call


def _scaled_mask(like: Tensor, p: float, valid: Tensor | None, state: Tensor | None) -> Tensor:
    """:func:`keep_mask` for ``like``, or for its rows in ``valid`` only (zeros elsewhere)."""
    if valid is None:
        return keep_mask(torch.empty_like(like), p, state)
    mask = like.new_zeros(like.shape)
    mask[valid] = keep_mask(like.new_empty(int(valid.sum()), *like.shape[1:]), p, state)
    return mask


@torch.library.custom_op("iexact::dropout_keep", mutates_args=())
def _dropout_keep(like: Tensor, p: float, valid: Tensor | None) -> list[Tensor]:
    state = generator_state(like.device)
    return [_scaled_mask(like, p, valid, None), state]


@_dropout_keep.register_fake
def _(like, p, valid):
    size = torch.default_generator.get_state().numel() if like.device.type == "cpu" else 16  # Philox: seed, offset
    return [torch.empty_like(like), torch.empty(size, dtype=torch.uint8)]


@torch.library.custom_op("iexact::dropout_redraw", mutates_args=())
def _dropout_redraw(state: Tensor, like: Tensor, p: float, valid: Tensor | None) -> Tensor:
    return _scaled_mask(like, p, valid, state)


@_dropout_redraw.register_fake
def _(state, like, p, valid):
    return torch.empty_like(like)


def dropout_keep(like: Tensor, p: float, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``(mask, state)``: the scaled keep-mask :math:`m / (1 - p)` that
    ``torch.nn.functional.dropout`` would draw for ``like`` (advancing torch's
    default generator as it does), and the generator snapshot taken before,
    :math:`0 < p < 1`. With ``valid``, the mask is drawn for ``like[valid]``
    (as dropout of that tensor draws it) and is 0 on the other rows."""
    mask, state = call(_dropout_keep, like, p, valid)
    return mask, state


def dropout_redraw(state: Tensor, like: Tensor, p: float, valid: Tensor | None = None) -> Tensor:
    """The mask :func:`dropout_keep` drew, redrawn from its ``state``."""
    return call(_dropout_redraw, state, like, p, valid)
