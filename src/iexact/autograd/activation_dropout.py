r"""ReLU or LeakyReLU followed by dropout: the signs of the kept elements only.

Dropout's backward zeroes the gradient of every dropped element, so the
activation's derivative matters only where the mask keeps: of :math:`n`
signs, backward needs the :math:`\approx (1 - p) n` kept ones, the mask being
redrawn from its generator snapshot as :class:`~iexact.autograd.DropoutFunction`
redraws it. The activation then runs as :class:`DeferredActivationFunction`
(its derivative left to the dropout, which *claims* its output) and the
dropout as :class:`ActivationDropoutFunction`; a claimed output must reach
nothing but the dropout, which only a caller's structure can promise (see
:mod:`iexact.nn.fusion`). An output that reaches backward unclaimed is
refused there, never differentiated as the identity.

``slope`` is LeakyReLU's negative slope, ``0.0`` for ReLU; the derivative is
1 where :math:`x > 0` and ``slope`` elsewhere, as the unfused Functions have it.
"""

from __future__ import annotations

import torch

from ..quant import (
    pack_mask,
    pack_positive,
    pack_selected,
    selected_capacity,
    selected_parts,
    unpack_mask,
    unpack_selected,
    unpacked_parts,
)
from .dropout import keep_for_backward, mask_like, restored_mask
from .saving import SavingFunction, load, save


def activate(x: torch.Tensor, slope: float) -> torch.Tensor:
    """ReLU (``slope`` 0) or LeakyReLU of ``x``, as torch computes them."""
    return torch.relu(x) if slope == 0 else torch.nn.functional.leaky_relu(x, slope)


def _derivative(grad: torch.Tensor, positive: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(positive, grad, grad * slope if slope else 0.0)


class DeferredActivationFunction(SavingFunction):
    r""":math:`h = \sigma(x)` whose derivative the dropout after it applies:
    backward passes :math:`dh` on as :math:`dx` once a dropout has claimed
    ``h`` (set ``claimed`` on its node), and raises otherwise.

    Stores: nothing.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        save(ctx)
        ctx.claimed, ctx.slope = False, slope
        return activate(x, slope)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if not ctx.claimed:
            raise RuntimeError(
                "iexact: a compressed activation left its derivative to the dropout after it, but its output "
                "reached backward without passing that dropout (a forward hook or a call from outside the "
                "model's forward?); compress the model again after adding hooks, or call the activation "
                "only inside the model's forward"
            )
        return grad_out, None


def claim(h: torch.Tensor) -> float | None:
    """The slope of the :class:`DeferredActivationFunction` ``h`` came from, if it
    is not yet claimed (it is claimed now, its derivative the caller's to
    apply); ``None`` for any other tensor."""
    node = h.grad_fn
    if not isinstance(node, DeferredActivationFunction._backward_cls) or node.claimed:
        return None
    node.claimed = True
    return node.slope


class ActivationDropoutFunction(SavingFunction):
    r""":math:`y = h \cdot m / (1 - p)` for :math:`h = \sigma(x)` claimed from a
    :class:`DeferredActivationFunction`, :math:`m` torch's own dropout mask;
    backward :math:`dx = dy \cdot m / (1 - p) \cdot \sigma'(x)`, :math:`m`
    redrawn from the generator snapshot (or, with ``bits``, read from its
    bits) and :math:`\sigma'` from the signs of :math:`h` (those of
    :math:`x`) where :math:`m = 1`. With ``bits`` after a ReLU
    (``slope`` 0), :math:`m \cdot \sigma'(x)` is one bit, "kept and
    positive", :math:`y > 0`: :math:`dx` is :math:`dy / (1 - p)` there and 0
    elsewhere.

    Stores, for :math:`0 < p < 1`: the generator snapshot and
    :func:`~iexact.quant.selected_capacity` bits,
    :math:`\approx (1 - p) n + 8 \sqrt{n p (1 - p)}`; with ``bits``
    :math:`\lceil n / 8 \rceil` bytes after a ReLU, the mask's bits and
    those selected ones after a LeakyReLU.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, p: float, slope: float, bits: bool) -> torch.Tensor:
        fused = bits and slope == 0  # one bit "kept and positive" holds the mask too
        mask, held = keep_for_backward(h, p, bits and not fused)
        assert mask is not None and held is not None  # 0 < p < 1
        ctx.p, ctx.slope, ctx.bits, ctx.layout = p, slope, bits, (mask.shape, mask.stride(), mask.dtype)
        if fused:
            out = mask.mul_(h)
            save(ctx, pack_positive(out))  # kept and positive: where dx is not 0
            return out
        signs = pack_selected(h, mask, selected_capacity(h.numel(), 1 - p))  # the signs where m != 0
        save(ctx, held, signs)
        return mask.mul_(h)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.bits and ctx.slope == 0:
            (kept_positive,) = load(ctx)
            return _scaled_where(grad_out, kept_positive, ctx.p), None, None, None
        held, signs = load(ctx)
        mask = restored_mask(mask_like(grad_out, ctx.layout), ctx.p, held, ctx.bits)
        assert mask is not None  # 0 < p < 1
        if not mask.is_contiguous() or mask.dtype != grad_out.dtype:
            return _derivative(grad_out * mask, unpack_selected(signs, mask), ctx.slope), None, None, None
        # dx in the mask's own buffer, a slice at a time: no boolean or float temporary of the full size
        grad, incoming = mask.view(-1), grad_out.reshape(-1)
        for part, positive in selected_parts(signs, mask):
            piece = grad[part].mul_(incoming[part])
            if ctx.slope == 0:
                _zero_where_not(piece, positive)
            else:
                piece.mul_(torch.where(positive, 1.0, ctx.slope).to(piece.dtype))
        return mask, None, None, None


def _scaled_where(grad: torch.Tensor, packed: torch.Tensor, p: float) -> torch.Tensor:
    r""":math:`dy / (1 - p)` where the bits ``packed`` are set, +0 elsewhere:
    bit for bit the mask's product with ``grad`` then :func:`_zero_where_not`
    (the scale a 0-dim tensor, divided as :func:`~iexact.seeds.keep_mask`
    divides; autograd hands ``grad`` in the output's dtype, the mask's),
    contiguous, the bits unpacked a slice at a time."""
    scale = torch.ones((), dtype=grad.dtype, device=grad.device).div_(1.0 - p)
    out = torch.mul(grad, scale, out=torch.empty(grad.shape, dtype=grad.dtype, device=grad.device))
    flat = out.view(-1)
    for part, set_bits in unpacked_parts(packed, flat.numel()):
        _zero_where_not(flat[part], set_bits)
    return out


_SAME_WIDTH = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # element size -> the integers that view it


def _zero_where_not(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``values`` with +0 where ``keep`` is False, in place: ``masked_fill_(~keep, 0)``'s
    result (whatever the value, infinities and NaN included), as an AND of each
    element's bits with all ones or none, which vectorizes where a random mask
    makes ``masked_fill_`` branch (2.4x faster on a 2,708 x 128 dropout's signs)."""
    words = _SAME_WIDTH.get(values.element_size())
    if words is None or not values.is_contiguous():
        return values.masked_fill_(~keep, 0.0)
    values.view(words).bitwise_and_(keep.to(words).neg_())
    return values


class ActivationDerivativeFunction(SavingFunction):
    r""":math:`h` unchanged, backward :math:`dx = dh \cdot \sigma'(x)` from the
    signs of :math:`h` (those of :math:`x`): the derivative of a claimed
    activation whose dropout does not drop (:math:`p \in \{0, 1\}`).

    Stores: :math:`\lceil n / 8 \rceil` bytes (the sign bits).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, slope: float) -> torch.Tensor:
        save(ctx, pack_mask(h > 0))
        ctx.shape, ctx.slope = h.shape, slope
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (packed,) = load(ctx)
        return _derivative(grad_out, unpack_mask(packed, ctx.shape), ctx.slope), None
