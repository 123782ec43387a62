r"""Batch normalization keeping its normalized input compressed."""

from __future__ import annotations

import math

import torch

from .. import graph
from ..config import CompressionConfig
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack


def _column_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_i a_{ic} b_{ic}` per column :math:`c`, :math:`(C,)` for :math:`(N, C)`
    inputs, summed over row chunks: no :math:`N \times C` product temporary."""
    rows = graph.rows_per_slice(a.shape[1])
    total = a.new_zeros(a.shape[1])
    for start in range(0, a.shape[0], rows):
        total += (a[start : start + rows] * b[start : start + rows]).sum(0)
    return total


class CompressedBatchNormFunction(SavingFunction):
    r"""Training-mode batch normalization over the rows of :math:`X`:

    .. math::
        \mu = \tfrac1N \textstyle\sum_i X_i, \quad
        \sigma^2 = \tfrac1N \textstyle\sum_i (X_i - \mu)^2, \quad
        \hat X = (X - \mu) / \sqrt{\sigma^2 + \epsilon}, \quad
        Y = \gamma \hat X + \beta,

    :math:`\hat X` by torch's own kernel (``native_batch_norm`` without
    :math:`\gamma, \beta`), which also updates the running statistics
    exactly as ``torch.nn.BatchNorm1d`` does when they are given.

    Backward, with :math:`g = \gamma\, dY`, the stored estimate of :math:`\hat X`
    re-centred per column (:math:`\tilde X = \hat X - \bar{\hat X}`; the exact
    columns have mean 0, which makes :math:`\sum_i dX_i = 0` exactly, as it is
    without compression):

    .. math::
        d\gamma = \textstyle\sum_i dY_i \tilde X_i, \quad d\beta = \sum_i dY_i, \quad
        dX = \frac{1}{N\sqrt{\sigma^2+\epsilon}}\Big(N g - \sum_i g_i
        - \tilde X \sum_i g_i \tilde X_i\Big),

    computed as :math:`a\, dY + b \hat X + c` per column, written into the
    decompressed estimate (one :math:`N \times C` temporary, as without
    compression: torch's backward kernel would allocate a third).
    :math:`d\gamma` is unbiased. :math:`dX` is unbiased up to :math:`O(1/N)`: its last term
    multiplies :math:`\tilde X_i` by a sum containing :math:`\tilde X_i` once,
    and :math:`\mathbb{E}[\hat X_i^2] = X_i^2 + \mathrm{Var}_i`, a bias of
    :math:`g_i \mathrm{Var}_i / N` per element (about :math:`1/N` relative: a
    second copy would remove it at twice the bytes, which no real graph's
    :math:`N` justifies).

    Stores: :math:`\hat X` compressed with ``config.batch_norm_inputs``
    (projected only with ``config.rp_norm``, never centered) and
    :math:`1/\sqrt{\sigma^2+\epsilon}` (:math:`4C` bytes).

    Shapes:
        - **input:** :math:`X` :math:`(N, C)`, :math:`\gamma, \beta` :math:`(C,)`
          or ``None``, the running mean and variance :math:`(C,)` or ``None``
          (updated in place with ``momentum``)
        - **output:** :math:`Y` :math:`(N, C)`
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        running: tuple,
        momentum: float,
        eps: float,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ):
        x32 = x.float()
        running_mean, running_var = running
        tracked = running_mean is not None and running_mean.dtype == x32.dtype
        kept_mean, kept_var = (running_mean, running_var) if tracked else (None, None)
        normalized, mean, invstd = torch.native_batch_norm(x32, None, None, kept_mean, kept_var, True, momentum, eps)
        if running_mean is not None and not tracked:  # buffers of another dtype: torch's update, rounded into them
            _update_running(running, x32, mean, momentum)
        save(ctx, weight, pack(normalized, config.batch_norm_inputs, seeds), invstd)
        out = normalized if weight is None else normalized.mul_(weight)  # packed: reused in place
        if bias is not None:
            out.add_(bias)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        weight, packed, invstd = load(ctx)
        normalized = unpack(packed).float()  # the one N x C temporary: dX is written into it
        rows, center = normalized.shape[0], normalized.mean(0)
        grad32 = grad_out.float()
        grad_bias = grad32.sum(0)
        grad_weight = _column_dots(grad32, normalized).sub_(center * grad_bias)  # of the re-centred estimate
        grad_x = None
        if ctx.needs_input_grad[0]:  # dX = a dY + b X_hat + c per column, the re-centring folded into c
            gain = invstd if weight is None else invstd * weight.float()
            slope = gain * grad_weight / -rows
            shift = (gain * grad_bias / -rows).sub_(slope * center)
            grad_x = normalized.mul_(slope).addcmul_(grad32, gain).add_(shift).to(grad_out.dtype)
        grad_weight = grad_weight.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = grad_bias.to(grad_out.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def _update_running(running: tuple, x32: torch.Tensor, mean: torch.Tensor, momentum: float) -> None:
    r"""Torch's running-statistics update into buffers of a dtype other than
    the float32 batch: :math:`\mu_r \leftarrow (1 - m)\mu_r + m\mu`,
    :math:`\sigma^2_r \leftarrow (1 - m)\sigma^2_r + m\,\sigma^2_{\text{unbiased}}`."""
    running_mean, running_var = running
    var = x32.var(0, unbiased=x32.shape[0] > 1)
    with torch.no_grad():
        running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        running_var.lerp_(var.to(running_var.dtype), momentum)


class CompressedLayerNormFunction(SavingFunction):
    r"""Layer normalization over the last dimensions of :math:`X` (``width``
    elements per row, :math:`M` rows), with PyG's and torch's values:

    .. math::
        \hat X = (X - \mu_r) / \sqrt{\sigma_r^2 + \epsilon}, \quad
        Y = \gamma \hat X + \beta \quad \text{(per row } r\text{)}.

    Backward, with :math:`g = \gamma\, dY` and row means :math:`\langle\cdot\rangle`:

    .. math::
        d\gamma = \textstyle\sum_r dY_r \hat X_r, \quad d\beta = \sum_r dY_r, \quad
        dX = \frac{1}{\sqrt{\sigma_r^2+\epsilon}}\Big(g - \langle g \rangle
        - \hat X \langle g \hat X \rangle\Big).

    The last term is quadratic in :math:`\hat X` and its mean runs over one
    row (tens of elements, not the :math:`N` rows of batch normalization), so
    one compressed copy would bias it by :math:`g_i \mathrm{Var}_i / D`:
    two copies compressed with independent seeds enter its two factors
    (the first also :math:`d\gamma`), each re-centred per row (the exact rows
    have mean 0), so :math:`dX` is unbiased and sums to 0 per row as it does
    without compression. Never projected: :math:`dX` needs :math:`\hat X`
    element by element.

    Stores: :math:`\hat X` compressed twice (``config.unprojected``) and
    :math:`1/\sqrt{\sigma_r^2+\epsilon}` (:math:`4M` bytes).

    Shapes:
        - **input:** :math:`X` :math:`(*, \text{normalized\_shape})`,
          :math:`\gamma, \beta` ``normalized_shape`` or ``None``
        - **output:** :math:`Y` shaped as :math:`X`
    """

    @staticmethod
    def forward(
        ctx, x, weight, bias, normalized_shape: tuple, eps: float, config: CompressionConfig, seeds: SeedStream | None
    ):
        out = torch.nn.functional.layer_norm(x, normalized_shape, weight, bias, eps)
        rows = x.detach().reshape(-1, math.prod(normalized_shape)).float()
        var, mean = torch.var_mean(rows, dim=1, keepdim=True, unbiased=False)
        invstd = torch.rsqrt(var + eps)
        normalized = (rows - mean).mul_(invstd)
        elementwise = config.unprojected
        save(ctx, weight, pack(normalized, elementwise, seeds), pack(normalized, elementwise, seeds), invstd)
        ctx.shape, ctx.normalized_shape = x.shape, tuple(normalized_shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weight, first, second, invstd = load(ctx)
        grad32 = grad_out.reshape(-1, math.prod(ctx.normalized_shape)).float()
        outer, inner = (_row_centred(unpack(packed).float()) for packed in (first, second))
        grad_weight = _column_dots(grad32, outer)
        grad_bias = grad32.sum(0)
        g = grad32 if weight is None else grad32 * weight.reshape(1, -1).float()
        projection = (g * inner).mean(1, keepdim=True)
        grad_x = outer.mul_(projection.neg_()).add_(g).sub_(g.mean(1, keepdim=True)).mul_(invstd)
        grad_x = grad_x.reshape(ctx.shape).to(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = grad_weight.reshape(ctx.normalized_shape).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_bias = grad_bias.reshape(ctx.normalized_shape).to(grad_out.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _row_centred(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` less each row's mean, in place."""
    return rows.sub_(rows.mean(1, keepdim=True))
