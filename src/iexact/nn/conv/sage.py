r"""``SAGEConv`` storing its input once for both linear maps."""
from __future__ import annotations

import torch

from ...autograd import CompressedLinearFunction, CompressedReLUFunction, SharedInputLinearFunction
from ..layers import CompressedModule
from .common import aggregate, is_lazy, linear_aggregation, needs_sparse_value_grad


class SAGEConvMixin(CompressedModule):
    r""":math:`X'_i = W_1 X_i + W_2 \cdot \mathrm{mean}_{j \in \mathcal N(i)} X_j`
    (or the sum), computed as :math:`A (X W_2^\top) + X W_1^\top + b`.

    Aggregation is linear, so :math:`W_2` is applied before it: both linear
    maps then read the same :math:`X`, which is compressed once
    (:class:`~iexact.autograd.SharedInputLinearFunction`), and the
    aggregation keeps nothing. Bipartite inputs :math:`(X_s, X_t)` store each
    side once.

    Stores: :math:`X` compressed, once.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if linear_aggregation(conv) is None:
            return f"aggr={conv.aggr!r} (only mean and sum are compressed)"
        if conv.normalize:
            return "normalize=True (the L2 normalization would keep its input uncompressed)"
        linears = [conv.lin_l] + ([conv.lin_r] if conv.root_weight else []) + ([conv.lin] if conv.project else [])
        return "lazy (run one forward pass before compress_)" if is_lazy(*linears) else None

    def forward(self, x, edge_index, size=None):
        if not self._compressing() or needs_sparse_value_grad(edge_index, None):
            return super().forward(x, edge_index, size)
        x_src, x_dst = (x, x) if isinstance(x, torch.Tensor) else x
        if self.project:
            x_src = CompressedReLUFunction.apply(self.lin(x_src))
        config, root = self.iexact_config, self.root_weight and x_dst is not None
        if root and x_dst is x_src:
            neighbour, out_root = SharedInputLinearFunction.apply(x_src, config, self.lin_l.weight, self.lin_r.weight)
        else:
            neighbour = CompressedLinearFunction.apply(x_src, self.lin_l.weight, None, config)
            out_root = CompressedLinearFunction.apply(x_dst, self.lin_r.weight, None, config) if root else None
        num_dst = size[1] if size is not None else (x_dst.size(0) if x_dst is not None else None)
        out = aggregate(neighbour, edge_index, None, linear_aggregation(self), self.flow, num_dst, config=config)
        if out_root is not None:
            out = out + out_root
            if self.lin_r.bias is not None:
                out = out + self.lin_r.bias
        return out if self.lin_l.bias is None else out + self.lin_l.bias
