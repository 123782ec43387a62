r"""Softmax aggregation (PyG's ``SoftmaxAggregation``, GENConv's and DeeperGCN's),
keeping the weights and the elements compressed."""

from __future__ import annotations

import dataclasses

from ..config import CompressionConfig
from ..seeds import SeedStream
from .attention import segment_softmax
from .saving import SavingFunction, load, pack, save, unpack


@dataclasses.dataclass(frozen=True)
class SoftmaxSpec:
    r"""``groups`` output rows; the inverse temperature ``t`` where it is a
    number (a learned one is passed as a tensor); ``semi_grad``: no gradient
    through the weights (PyG's option)."""

    groups: int
    t: float | None = None
    semi_grad: bool = False


class SoftmaxAggregateFunction(SavingFunction):
    r""":math:`y_g = \sum_{i \in g} \alpha_i \odot x_i` with
    :math:`\alpha_i = \mathrm{softmax}_{i \in g}(t\, x_i)` per column.

    Backward with :math:`g_i = dy_{g(i)}`: :math:`dx_i = \alpha_i \odot g_i
    \odot (1 + t (x_i - y_{g(i)}))` and :math:`dt = \sum_i \alpha_i \odot
    g_i \odot (x_i - y_{g(i)}) \odot x_i` (summed to the shape of :math:`t`);
    with ``semi_grad``, :math:`dx_i = \alpha_i \odot g_i`.

    **Unbiased.** Every factor is kept compressed with its own seed:
    :math:`\hat\alpha`, :math:`\hat y` and :math:`\hat X` (twice where
    :math:`t` is learned, since :math:`dt` reads it twice), so each product
    is the product of independent unbiased estimates. The weights are kept
    rather than recomputed: a softmax of decompressed elements would be biased.

    Stores: :math:`\alpha` and :math:`X` compressed (:math:`X` twice with a
    learned :math:`t`, neither with ``semi_grad``), :math:`y` compressed;
    never projected (they meet element by element).

    Shapes:
        - **input:** :math:`X` :math:`(E, R)`, ``index`` :math:`(E,)` in
          ``[0, groups)``, :math:`t` broadcastable to :math:`(1, R)` or ``None``
        - **output:** :math:`(\text{groups}, R)`
    """

    @staticmethod
    def forward(ctx, x, index, t, spec: SoftmaxSpec, config: CompressionConfig, seeds: SeedStream | None):
        temperature = t if t is not None else spec.t
        logits = x if temperature is None or (t is None and temperature == 1) else x * temperature
        weights = segment_softmax(logits, index, spec.groups)
        del logits
        weighted = weights * x  # promoted as PyG's x * alpha: float32 for a bf16 x and a float32 t
        out = weighted.new_zeros(spec.groups, x.shape[1]).index_add_(0, index, weighted)
        del weighted
        elementwise = config.unprojected
        kept = [pack(weights, elementwise, seeds)]
        if not spec.semi_grad:
            copies = 2 if t is not None and t.requires_grad else 1
            kept += [
                pack(out, elementwise, seeds),
                *(pack(x, elementwise, seeds, argument=True) for _ in range(copies)),
            ]
        save(ctx, index, t, *kept)
        ctx.spec = spec
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, t, weights, *kept = load(ctx)
        spec = ctx.spec
        grad = unpack(weights).to(grad_out.dtype).mul_(grad_out.index_select(0, index))  # α_i g_i
        if spec.semi_grad:
            return grad, None, None, None, None, None
        out, first, *second = (unpack(item).to(grad_out.dtype) for item in kept)
        centred = first.sub_(out.index_select(0, index))  # x_i - y_g
        temperature = t.to(grad_out.dtype) if t is not None else (1.0 if spec.t is None else spec.t)
        grad_t = None
        if second:
            assert t is not None  # a second copy is kept for a learned t only
            terms = (grad * centred).mul_(second[0])
            grad_t = terms.sum_to_size(t.shape) if t.dim() else terms.sum()
        return grad.mul_(centred.mul_(temperature).add_(1)), None, grad_t, None, None, None
