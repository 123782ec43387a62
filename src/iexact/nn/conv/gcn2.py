r"""``GCN2Conv`` (GCNII) with compressed inputs of its weight products."""
from __future__ import annotations

from ...autograd import CompressedLinearFunction
from ..layers import CompressedModule
from .common import aggregate, gcn_graph, needs_sparse_value_grad


class GCN2ConvMixin(CompressedModule):
    r""":math:`X' = \big((1-\alpha) \hat P X + \alpha X^{(0)}\big)\big((1-\beta) I + \beta \Theta\big)`.

    The aggregation keeps nothing (normalization recomputed in backward);
    the product with :math:`\Theta` keeps its input compressed. With
    ``shared_weights=False`` the two products
    (:math:`(1-\alpha)\hat P X` and :math:`\alpha X^{(0)}`) each keep theirs.

    Stores: one (or two) compressed :math:`N \times F` tensors.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if conv.aggr == "add" else f"aggr={conv.aggr!r}"

    def forward(self, x, x_0, edge_index, edge_weight=None):
        if not self._compressing() or needs_sparse_value_grad(edge_index, edge_weight):
            return super().forward(x, x_0, edge_index, edge_weight)
        config, beta = self.iexact_config, self.beta
        structure, weight, gcn = gcn_graph(self, x, edge_index, edge_weight, improved=False)
        smoothed = aggregate(x, structure, weight, "sum", self.flow, gcn=gcn, config=config) * (1 - self.alpha)
        initial = x_0[: smoothed.size(0)] * self.alpha
        if self.weight2 is None:
            mixed = smoothed + initial
            return mixed * (1 - beta) + CompressedLinearFunction.apply(mixed, self.weight1.t(), None, config) * beta
        return (smoothed * (1 - beta) + CompressedLinearFunction.apply(smoothed, self.weight1.t(), None, config) * beta
                + initial * (1 - beta) + CompressedLinearFunction.apply(initial, self.weight2.t(), None, config) * beta)
