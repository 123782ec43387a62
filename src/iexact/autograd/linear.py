r"""Linear layer whose saved input is compressed."""
from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..quant import compress
from ..quant.codec import decompress_stored, projection_transpose


class CompressedLinearFunction(torch.autograd.Function):
    r""":math:`Y = X W^\top + b`, keeping :math:`X` compressed for :math:`dW`.

    Backward:

    .. math::
        dX = dY\,W, \qquad dW = dY^\top \hat X = (dY^\top \hat Z)\,P^\top,
        \qquad db = \textstyle\sum_{\text{rows}} dY,

    so with a projection the full-width :math:`\hat X` is never rebuilt:
    :math:`dY^\top \hat Z` is (out × k) and one small product with
    :math:`P^\top` gives :math:`dW`. :math:`\mathbb{E}[dW]` equals the exact
    gradient because :math:`\hat X` is unbiased and enters linearly.

    Stores: the :class:`~iexact.quant.PackedActivation` of :math:`X`
    (:math:`\lceil N k b/8 \rceil` bytes plus scales), nothing when :math:`W`
    needs no gradient.

    Shapes:
        - **input:** :math:`X` :math:`(*, D)`, :math:`W` :math:`(F, D)`,
          :math:`b` :math:`(F,)` or ``None``
        - **output:** :math:`(*, F)`
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                config: CompressionConfig) -> torch.Tensor:
        ctx.packed = compress(x.detach(), config) if weight.requires_grad else None
        ctx.save_for_backward(weight)
        ctx.input_shape = x.shape
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_rows @ weight.to(grad_rows.dtype)).view(ctx.input_shape)
        if ctx.needs_input_grad[1] and ctx.packed is not None:
            stored = decompress_stored(ctx.packed)
            grad_w = grad_rows.float().t() @ stored
            projection_t = projection_transpose(ctx.packed)
            if projection_t is not None:
                grad_w = grad_w @ projection_t
            grad_w = grad_w.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(0)
        ctx.packed = None
        return grad_x, grad_w, grad_b, None
