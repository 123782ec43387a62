r"""PyG's ``SoftmaxAggregation`` (GENConv's ``aggr="softmax"``) keeping its weights and elements compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn.aggr import SoftmaxAggregation

from ..autograd import SoftmaxAggregateFunction
from ..autograd.softmax_aggregation import SoftmaxSpec
from .aggregation import GroupAggregationHandler
from .handler import register_handler


@register_handler(SoftmaxAggregation)
class SoftmaxAggregationHandler(GroupAggregationHandler):
    r""":math:`\sum_{i \in g} \mathrm{softmax}_{i \in g}(t x_i) \odot x_i` per group
    (a learned or fixed inverse temperature :math:`t`, per channel with
    ``channels``), through :class:`~iexact.autograd.SoftmaxAggregateFunction`,
    along any ``dim`` (:class:`~iexact.nn.aggregation.GroupAggregationHandler`
    says which calls are compressed).

    Stores: the weights, the output and the elements compressed (the elements
    twice with a learned :math:`t`; only the weights with ``semi_grad``).
    """

    def check_input(self, x, dim):
        if self.channels != 1:
            self.assert_two_dimensional_input(x, dim)

    def aggregate_rows(self, rows, index, groups):
        learned = isinstance(self.t, torch.Tensor)
        t = self.t.view(1, -1) if learned and self.channels != 1 else self.t if learned else None
        spec = SoftmaxSpec(groups, None if learned else float(self.t), self.semi_grad and not self.learn)
        return SoftmaxAggregateFunction.apply(rows, index, t, spec, self.iexact_config, self.iexact_seeds)
