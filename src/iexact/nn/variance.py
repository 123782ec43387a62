r"""PyG's ``VarAggregation`` and ``StdAggregation`` (PNA's ``var`` and ``std``) keeping the elements compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn.aggr import StdAggregation, VarAggregation

from ..autograd import VarianceFunction
from ..autograd.variance import VarianceSpec
from .handler import CompressedModule, register_handler


@register_handler(VarAggregation, StdAggregation)
class VarianceAggregationHandler(CompressedModule):
    r"""The variance :math:`\frac{1}{c_g} \sum_{i \in g} x_i^2 - \mu_g^2` of each
    group's elements, or its root for ``StdAggregation``, through
    :class:`~iexact.autograd.VarianceFunction`, along any ``dim``.

    Calls with ``index`` and ``dim_size`` (as PyG's convs make them, PNA's
    included) are compressed; ``ptr`` alone, or no ``dim_size`` (whose
    inference reads the index's largest value), take the module's own path.

    Stores: the elements compressed (the group means with ``semi_grad``), the
    deviation's :math:`1 / (2 s)` compressed.
    """

    @staticmethod
    def owned(module) -> list[torch.nn.Module]:
        return [module.var_aggr] if isinstance(module, StdAggregation) else []

    def forward(self, x, index=None, ptr=None, dim_size=None, dim=-2):
        if (
            not self._compressing()
            or index is None
            or dim_size is None
            or not isinstance(x, torch.Tensor)
            or not x.is_floating_point()
        ):
            return super().forward(x, index, ptr, dim_size, dim)
        std = isinstance(self, StdAggregation)
        semi_grad = (self.var_aggr if std else self).semi_grad
        rows = x.movedim(dim, 0)
        spec = VarianceSpec(dim_size, std, semi_grad)
        out = VarianceFunction.apply(
            rows.reshape(rows.shape[0], -1), index, spec, self.iexact_config, self.iexact_seeds
        )
        return out.view(dim_size, *rows.shape[1:]).movedim(0, dim)
