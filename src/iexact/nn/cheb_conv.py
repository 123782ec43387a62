r"""``ChebConv`` keeping its input once, compressed, for all :math:`K` weight gradients."""

from __future__ import annotations

import numbers

import torch
from torch_geometric.nn import ChebConv

from ..autograd import ChebyshevFunction
from ..graph import LaplacianSpec, is_sparse
from .handler import CompressedModule, register_handler
from .message_inputs import runs_stock


@register_handler(ChebConv)
class ChebConvHandler(CompressedModule):
    r""":math:`X' = \sum_{k<K} T_k(\tilde L) X\, \Theta_k^\top + b` with the
    scaled Laplacian :math:`\tilde L = 2L/\lambda_{max} - I`, through
    :class:`~iexact.autograd.ChebyshevFunction`: the conv computes its
    ``lins`` itself, and the Laplacian is applied without building a new
    edge index (self-loops weighted 0 in place, the diagonal as a vector),
    so nothing depends on the data's shape.

    Inputs as ChebConv takes them: :math:`X` :math:`(N, F)`, a ``(2, E)``
    ``edge_index`` or ``EdgeIndex``, ``edge_weight``, and ``lambda_max`` as
    a number or a one-element tensor (``batch`` is then unused, as in PyG).
    Per-graph ``lambda_max`` values, edge weights that need a gradient and
    a ``torch.sparse`` adjacency (which ChebConv refuses) take the module's own path.

    Stores: :math:`X` compressed, once.
    """

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return list(conv.lins)

    def _stock_reason(self, x, edge_index, edge_weight, lambda_max) -> str | None:
        """Why this call takes ChebConv's own forward (which raises PyG's errors for malformed input)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            return "the input is not an (N, F) matrix"
        if (
            not isinstance(edge_index, torch.Tensor)
            or is_sparse(edge_index)
            or edge_index.dim() != 2
            or edge_index.size(0) != 2
            or edge_index.is_floating_point()
        ):
            return "the graph is not a (2, E) integer edge_index"
        if edge_weight is not None and edge_weight.requires_grad:
            return "the edge weights need a gradient"
        if isinstance(lambda_max, torch.Tensor) and (lambda_max.numel() != 1 or lambda_max.requires_grad):
            return "lambda_max holds one value per graph, or needs a gradient"
        return None

    def forward(self, x, edge_index, edge_weight=None, batch=None, lambda_max=None):
        if not self._compressing() or runs_stock(
            self, x, edge_index, self._stock_reason(x, edge_index, edge_weight, lambda_max)
        ):
            return super().forward(x, edge_index, edge_weight, batch, lambda_max)
        given = lambda_max if isinstance(lambda_max, torch.Tensor) else None
        number = float(lambda_max) if isinstance(lambda_max, numbers.Real) else None
        spec = LaplacianSpec(x.size(0), self.normalization, self.flow, number)
        out = ChebyshevFunction.apply(
            x,
            edge_index,
            edge_weight,
            given,
            spec,
            self.iexact_config,
            self.iexact_seeds,
            *(lin.weight for lin in self.lins),
        )
        return out if self.bias is None else out + self.bias
