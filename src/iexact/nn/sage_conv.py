r"""``SAGEConv`` storing its input once for both linear maps."""
from __future__ import annotations

import torch
from torch_geometric.nn import SAGEConv

from ..autograd import CompressedLinearFunction, CompressedReLUFunction, SharedInputLinearFunction
from .aggregation import aggregate, linear_aggregation, needs_sparse_value_grad
from .handler import CompressedModule, is_lazy, register_handler


@register_handler(SAGEConv)
class SAGEConvHandler(CompressedModule):
    r""":math:`X'_i = W_1 X_i + W_2 \cdot \mathrm{mean}_{j \in \mathcal N(i)} X_j`
    (or the sum), computed as :math:`A (X W_2^\top) + X W_1^\top + b`.

    Aggregation is linear, so :math:`W_2` is applied before it: both linear
    maps then read the same :math:`X`, which is compressed once
    (:class:`~iexact.autograd.SharedInputLinearFunction`), and the
    aggregation keeps nothing. Bipartite inputs :math:`(X_s, X_t)` store each
    side once. The conv computes ``lin_l``, ``lin_r`` (and ``lin`` with
    ``project=True``) itself.

    Stores: :math:`X` compressed, once.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if linear_aggregation(conv) is None:
            return f"aggr={conv.aggr!r} (only mean and sum are compressed)"
        if conv.normalize:
            return "normalize=True (the L2 normalization would keep its input uncompressed)"
        return "lazy (run one forward pass before compress_)" if is_lazy(*SAGEConvHandler.owned(conv)) else None

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [conv.lin_l] + ([conv.lin_r] if conv.root_weight else []) + ([conv.lin] if conv.project else [])

    def forward(self, x, edge_index, size=None):
        if not self._compressing() or needs_sparse_value_grad(edge_index, None):
            return super().forward(x, edge_index, size)
        config, seeds = self.iexact_config, self.iexact_seeds
        x_src, x_dst = (x, x) if isinstance(x, torch.Tensor) else x
        if self.project:
            x_src = CompressedReLUFunction.apply(
                CompressedLinearFunction.apply(x_src, self.lin.weight, self.lin.bias, config, seeds))
        root = self.root_weight and x_dst is not None
        if root and x_dst is x_src:
            neighbour, out_root = SharedInputLinearFunction.apply(x_src, config, seeds, self.lin_l.weight,
                                                                  self.lin_r.weight)
        else:
            neighbour = CompressedLinearFunction.apply(x_src, self.lin_l.weight, None, config, seeds)
            out_root = CompressedLinearFunction.apply(x_dst, self.lin_r.weight, None, config, seeds) if root else None
        num_dst = size[1] if size is not None else (x_dst.size(0) if x_dst is not None else None)
        out = aggregate(neighbour, edge_index, None, linear_aggregation(self), self.flow, num_dst,
                        config=config, seeds=seeds)
        if out_root is not None:
            out = out + out_root
            if self.lin_r.bias is not None:
                out = out + self.lin_r.bias
        return out if self.lin_l.bias is None else out + self.lin_l.bias
