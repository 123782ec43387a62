r"""PyG's ``VarAggregation`` and ``StdAggregation`` (PNA's ``var`` and ``std``) keeping the elements compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn.aggr import StdAggregation, VarAggregation

from ..autograd import VarianceFunction
from ..autograd.variance import VarianceSpec
from .aggregation import GroupAggregationHandler
from .handler import register_handler


@register_handler(VarAggregation, StdAggregation)
class VarianceAggregationHandler(GroupAggregationHandler):
    r"""The variance :math:`\frac{1}{c_g} \sum_{i \in g} x_i^2 - \mu_g^2` of each
    group's elements, or its root for ``StdAggregation``, through
    :class:`~iexact.autograd.VarianceFunction`, along any ``dim``
    (:class:`~iexact.nn.aggregation.GroupAggregationHandler` says which calls
    are compressed: PNA's are).

    Stores: the centred elements compressed (divided by the deviation for
    ``StdAggregation``), or with ``semi_grad`` the group means (divided likewise).
    """

    @staticmethod
    def owned(module) -> list[torch.nn.Module]:
        return [module.var_aggr] if isinstance(module, StdAggregation) else []

    def aggregate_rows(self, rows, index, groups):
        std = isinstance(self, StdAggregation)
        spec = VarianceSpec(groups, std, (self.var_aggr if std else self).semi_grad)
        return VarianceFunction.apply(rows, index, spec, self.iexact_config, self.iexact_seeds)
