r"""``GINConv`` whose aggregation keeps nothing."""

from __future__ import annotations

import torch
from torch_geometric.nn import GINConv

from ..autograd import EpsScaleFunction, mark_intermediate
from .aggregation import aggregate, linear_aggregation, sparse_value_reason
from .handler import CompressedModule, register_handler
from .message_inputs import message_inputs, runs_stock


@register_handler(GINConv)
class GINConvHandler(CompressedModule):
    r""":math:`X'_i = h_\Theta\big((1 + \epsilon) X_i + \sum_{j \in \mathcal N(i)} X_j\big)`.

    The aggregation keeps nothing; :math:`(1+\epsilon) X` keeps :math:`X`
    compressed only when :math:`\epsilon` is trained. The aggregated input is
    this conv's own tensor even where no gradient flows into it (the first
    layer, from ``data.x``): :math:`h_\Theta`'s first linear map keeps it
    compressed, never by reference. :math:`h_\Theta` is a
    network of its own, not a linear map of the conv: its modules are
    converted (and asked about by ``filter_fn``) one by one.

    Stores: nothing of its own unless ``train_eps=True``.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        return None if linear_aggregation(conv) else f"aggr={conv.aggr!r} (only sum and mean are compressed)"

    def forward(self, x, edge_index, size=None):
        if runs_stock(self, x, edge_index, sparse_value_reason(edge_index, None)):
            return super().forward(x, edge_index, size)
        config, seeds = self.iexact_config, self.iexact_seeds
        inputs = message_inputs(self, (x, x) if isinstance(x, torch.Tensor) else x, edge_index, size)
        root = None if inputs.root is None else EpsScaleFunction.apply(inputs.root, self.eps, config, seeds)
        out = aggregate(self, inputs.source, edge_index, None, inputs, root=root)
        return self.nn(mark_intermediate(out))
