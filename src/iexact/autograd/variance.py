r"""The variance and standard-deviation aggregations (PyG's ``VarAggregation``,
``StdAggregation``, PNA's ``std``), keeping the elements compressed."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import CompressionConfig
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack

STD_FLOOR = 1e-5  # PyG's: the variance is clamped to it, a deviation at or below its root reads 0


@dataclasses.dataclass(frozen=True)
class VarianceSpec:
    """``groups`` output rows; ``std``: the root of the variance (as ``StdAggregation``);
    ``semi_grad``: :math:`E[X^2]` without a gradient (PyG's option)."""

    groups: int
    std: bool = False
    semi_grad: bool = False


def _counts(index: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows per group, at least 1 (an empty group's mean is 0), :math:`(\text{groups}, 1)`."""
    ones = torch.ones_like(index, dtype=dtype)
    return ones.new_zeros(groups).index_add_(0, index, ones).clamp_(min=1).unsqueeze(1)


def _group_means(x: torch.Tensor, index: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The mean of the rows of ``x`` in each group, as PyG's ``scatter(..., reduce="mean")``."""
    return x.new_zeros(count.shape[0], x.shape[1]).index_add_(0, index, x) / count


class VarianceFunction(SavingFunction):
    r""":math:`v_g = \frac{1}{c_g} \sum_{i \in g} x_i^2 - \mu_g^2` per group :math:`g`
    of :math:`c_g` rows, with :math:`\mu_g = \frac{1}{c_g} \sum_{i \in g} x_i`;
    with ``spec.std``, :math:`s_g = \sqrt{\max(v_g, 10^{-5})}`, read as 0 at or below
    :math:`\sqrt{10^{-5}}` (PyG's ``StdAggregation``).

    Backward: :math:`dx_i = \frac{2}{c_g} (x_i - \mu_g)\, dv_g` for the
    variance and :math:`dx_i = \frac{1}{c_g} \frac{x_i - \mu_g}{s_g}\, ds_g`
    for the deviation (0 where it reads 0); with ``semi_grad`` (no gradient
    through :math:`E[X^2]`) only the mean's part, :math:`-\frac{2}{c_g} \mu_g\, dv_g`
    or :math:`-\frac{1}{c_g} \frac{\mu_g}{s_g}\, ds_g`.

    **Unbiased.** Each gradient is linear in the one tensor kept, the
    centred elements :math:`x_i - \mu_g` (divided by :math:`s_g` for the
    deviation, as LayerNorm keeps its normalized input: bounded, so its
    blocks quantize well) or, with ``semi_grad``, the group's
    :math:`\mu_g` (or :math:`\mu_g / s_g`).

    Stores: that tensor compressed (never projected: its rows meet per group).

    Shapes:
        - **input:** :math:`X` :math:`(E, R)`, ``index`` :math:`(E,)` in ``[0, groups)``
        - **output:** :math:`(\text{groups}, R)`
    """

    @staticmethod
    def forward(ctx, x, index, spec: VarianceSpec, config: CompressionConfig, seeds: SeedStream | None):
        count = _counts(index, spec.groups, x.dtype)
        mean = _group_means(x, index, count)
        out = _group_means(x * x, index, count) - mean * mean
        scale = None
        if spec.std:
            out = out.clamp(min=STD_FLOOR).sqrt()
            out = out.masked_fill(out <= math.sqrt(STD_FLOOR), 0.0)
            scale = torch.where(out > 0, out.reciprocal(), 0.0)
        if spec.semi_grad:
            kept = mean if scale is None else mean * scale
        else:
            kept = x - mean.index_select(0, index)
            kept = kept if scale is None else kept.mul_(scale.index_select(0, index))
        save(ctx, index, pack(kept, config.unprojected, seeds))
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, kept = load(ctx)
        spec = ctx.spec
        # (2 / c) dv for the variance, (1 / c) ds for the deviation
        grad = grad_out * ((1.0 if spec.std else 2.0) / _counts(index, spec.groups, grad_out.dtype))
        kept = unpack(kept).to(grad_out.dtype)
        if spec.semi_grad:
            return (-(kept * grad)).index_select(0, index), None, None, None, None
        return kept.mul_(grad.index_select(0, index)), None, None, None, None
