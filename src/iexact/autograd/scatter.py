r"""Scatter maximum and minimum keeping one bit per source element."""

from __future__ import annotations

import torch

from ..quant import pack_mask, unpack_mask
from .saving import SavingFunction, load, save


class ScatterExtremumFunction(SavingFunction):
    r""":math:`Y = S.\mathrm{scatter\_reduce}(d, I, X, \mathrm{reduce}, \mathrm{include\_self}=\mathrm{False})`
    for ``reduce`` ``"amax"`` or ``"amin"`` (PyG's max and min aggregation), in place
    on :math:`S` as ``scatter_reduce_`` is, with torch's gradient bit for bit: each
    output's gradient shared evenly among the sources equal to it,

    .. math::
        M = [X = Y.\mathrm{gather}(d, I)], \quad C = [S = Y].\mathrm{scatter\_add}(d, I, M),
        \quad dX = M \odot (dY / C).\mathrm{gather}(d, I)

    (torch counts an element of :math:`S` equal to the result among the ties
    even without ``include_self``). Backward needs only the two masks: one bit
    per element of :math:`X` and of :math:`Y`, where torch keeps :math:`X`,
    :math:`S` and :math:`Y`. :math:`S` gets no gradient (it must not need one).

    Stores: :math:`\lceil |X| / 8 \rceil + \lceil |Y| / 8 \rceil` bytes and a reference to :math:`I`.

    Shapes:
        - **input:** :math:`S` any, :math:`I` and :math:`X` as ``scatter_reduce`` takes them
        - **output:** :math:`S`'s
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor, reduce: str):
        before = out.clone()
        out.scatter_reduce_(dim, index, src, reduce, include_self=False)
        ctx.mark_dirty(out)
        save(ctx, index, pack_mask(src == out.gather(dim, index)), pack_mask(before == out))
        ctx.dim, ctx.shape, ctx.out_shape = dim, src.shape, out.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        index, chosen, kept = load(ctx)
        chosen = unpack_mask(chosen, ctx.shape).to(grad_out.dtype)
        count = unpack_mask(kept, ctx.out_shape).to(grad_out.dtype).scatter_add_(ctx.dim, index, chosen)
        return None, None, None, chosen * (grad_out / count).gather(ctx.dim, index), None
