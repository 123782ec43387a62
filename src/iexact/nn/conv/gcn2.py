r"""``GCN2Conv`` (GCNII) with compressed inputs of its weight products."""
from __future__ import annotations

import torch

from ...autograd import CompressedLinearFunction
from ..layers import CompressedModule
from .common import aggregate, gcn_graph, needs_sparse_value_grad


class GCN2ConvMixin(CompressedModule):
    r""":math:`X' = \big((1-\alpha) \hat P X + \alpha X^{(0)}\big)\big((1-\beta) I + \beta \Theta\big)`.

    The aggregation keeps nothing (normalization recomputed in backward);
    the product with :math:`\Theta` keeps its input compressed. With
    ``shared_weights=False`` the two products (:math:`(1-\alpha)\hat P X`
    and :math:`X^{(0)}`) each keep theirs.

    Stores: one (or two) compressed :math:`N \times F` tensors.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if conv.aggr == "add" else f"aggr={conv.aggr!r}"

    def forward(self, x, x_0, edge_index, edge_weight=None):
        if not self._compressing() or needs_sparse_value_grad(edge_index, edge_weight):
            return super().forward(x, x_0, edge_index, edge_weight)
        config, alpha, beta = self.iexact_config, self.alpha, self.beta
        structure, weight, gcn = gcn_graph(self, x, edge_index, edge_weight, improved=False)
        # constant factors go through aggregation, add(alpha=) and lerp, which keep no scalar tensors
        smoothed = aggregate(x, structure, weight, "sum", self.flow, config=config, gcn=gcn, scale=1 - alpha)
        initial = x_0[: smoothed.size(0)]
        if self.weight2 is None:
            mixed = torch.add(smoothed, initial, alpha=alpha)
            return torch.lerp(mixed, CompressedLinearFunction.apply(mixed, self.weight1.t(), None, config), beta)
        own = torch.lerp(smoothed, CompressedLinearFunction.apply(smoothed, self.weight1.t(), None, config), beta)
        return torch.add(own, torch.lerp(initial, CompressedLinearFunction.apply(
            initial, self.weight2.t(), None, config), beta), alpha=alpha)
