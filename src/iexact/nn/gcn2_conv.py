r"""``GCN2Conv`` (GCNII) with compressed inputs of its weight products."""

from __future__ import annotations

import torch
from torch_geometric.nn import GCN2Conv

from ..autograd import CompressedLinearFunction, mark_intermediate
from .aggregation import aggregate, sparse_value_reason
from .gcn_conv import gcn_graph
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(GCN2Conv)
class GCN2ConvHandler(CompressedModule):
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
        # GCN2Conv's own forward takes matrices only (torch.addmm): anything else gets its error
        if (
            not isinstance(x, torch.Tensor)
            or x.dim() != 2
            or runs_stock(self, x, edge_index, sparse_value_reason(edge_index, edge_weight))
        ):
            return super().forward(x, x_0, edge_index, edge_weight)
        config, seeds, alpha, beta = self.iexact_config, self.iexact_seeds, self.alpha, self.beta
        inputs = message_inputs(self, x, edge_index)
        structure, weight, gcn = gcn_graph(self, x, edge_index, edge_weight, improved=False)
        # constant factors go through aggregation, add(alpha=) and lerp, which keep no scalar tensors
        # made here (without a grad_fn when x needs no gradient), so no caller's: compressed, never referenced
        smoothed = mark_intermediate(aggregate(self, x, structure, weight, inputs, gcn=gcn, scale=1 - alpha))
        initial = x_0[: smoothed.size(0)]
        if self.weight2 is None:
            mixed = mark_intermediate(torch.add(smoothed, initial, alpha=alpha))
            product = CompressedLinearFunction.apply(mixed, self.weight1.t(), None, config, seeds)
            return torch.lerp(mixed.to(product.dtype), product, beta)  # autocast's addmm: its dtype
        own_product = CompressedLinearFunction.apply(smoothed, self.weight1.t(), None, config, seeds)
        initial_product = CompressedLinearFunction.apply(initial, self.weight2.t(), None, config, seeds)
        own = torch.lerp(smoothed.to(own_product.dtype), own_product, beta)
        return torch.add(own, torch.lerp(initial.to(initial_product.dtype), initial_product, beta), alpha=alpha)
