r"""PyG's ``SoftmaxAggregation`` (GENConv's ``aggr="softmax"``) keeping its weights and elements compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn.aggr import SoftmaxAggregation

from ..autograd import SoftmaxAggregateFunction
from ..autograd.softmax_aggregation import SoftmaxSpec
from .handler import CompressedModule, register_handler


@register_handler(SoftmaxAggregation)
class SoftmaxAggregationHandler(CompressedModule):
    r""":math:`\sum_{i \in g} \mathrm{softmax}_{i \in g}(t x_i) \odot x_i` per group
    (a learned or fixed inverse temperature :math:`t`, per channel with
    ``channels``), through :class:`~iexact.autograd.SoftmaxAggregateFunction`,
    along any ``dim``.

    Calls with ``index`` and ``dim_size`` (as PyG's convs make them) are
    compressed; ``ptr`` alone, or no ``dim_size``, take the module's own path.

    Stores: the weights, the output and the elements compressed (the elements
    twice with a learned :math:`t`; only the weights with ``semi_grad``).
    """

    def forward(self, x, index=None, ptr=None, dim_size=None, dim=-2):
        if (
            not self._compressing()
            or index is None
            or dim_size is None
            or not isinstance(x, torch.Tensor)
            or not x.is_floating_point()
        ):
            return super().forward(x, index, ptr, dim_size, dim)
        if self.channels != 1:
            self.assert_two_dimensional_input(x, dim)
        learned = isinstance(self.t, torch.Tensor)
        t = self.t.view(1, -1) if learned and self.channels != 1 else self.t if learned else None
        spec = SoftmaxSpec(dim_size, None if learned else float(self.t), self.semi_grad and not self.learn)
        rows = x.movedim(dim, 0)
        out = SoftmaxAggregateFunction.apply(
            rows.reshape(rows.shape[0], -1), index, t, spec, self.iexact_config, self.iexact_seeds
        )
        return out.view(dim_size, *rows.shape[1:]).movedim(0, dim)
