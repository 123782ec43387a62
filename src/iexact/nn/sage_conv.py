r"""``SAGEConv`` storing its input once for both linear maps."""

from __future__ import annotations

from typing import cast

import torch
from torch_geometric.nn import Linear, SAGEConv
from torch_geometric.utils import spmm

from ..autograd import CompressedLinearFunction, CompressedReLUFunction, RowChunkedSAGEFunction
from ..graph import GraphSpec, csr_row_blocks, is_sparse, plain, rows_per_slice
from .aggregation import aggregated_linear, linear_aggregation, sparse_value_reason
from .handler import CompressedModule, has_forward_hooks, register_handler
from .message_inputs import message_inputs, runs_stock, stock_reason


@register_handler(SAGEConv)
class SAGEConvHandler(CompressedModule):
    r""":math:`X'_i = W_1 X_i + W_2 \cdot \mathrm{mean}_{j \in \mathcal N(i)} X_j`
    (or the sum), computed as :math:`A (X W_2^\top) + X W_1^\top + b`.

    Aggregation is linear, so :math:`W_2` is applied before it: both linear
    maps then read the same :math:`X`, which is compressed once
    (:class:`~iexact.autograd.SharedInputLinearFunction`), and the
    aggregation keeps nothing. Bipartite inputs :math:`(X_s, X_t)` store each
    side once. The conv computes ``lin_l``, ``lin_r`` (and ``lin`` with
    ``project=True``) itself. On a ``torch.sparse`` CSR adjacency (``--graph
    csr``) it runs as :math:`X_t W_1^\top + (A X) W_2^\top`, target rows a
    slice at a time (:class:`~iexact.autograd.RowChunkedSAGEFunction`), so a
    step holds two :math:`N \times F` tensors at once, not three.

    Stores: :math:`X` compressed, once.
    """

    @staticmethod
    def unsupported(conv) -> str | None:
        if linear_aggregation(conv) is None:
            return f"aggr={conv.aggr!r} (only mean and sum are compressed)"
        if conv.normalize:
            return "normalize=True (the L2 normalization would keep its input uncompressed)"
        return None

    @staticmethod
    def owned(conv) -> list[torch.nn.Module]:
        return [conv.lin_l] + ([conv.lin_r] if conv.root_weight else []) + ([conv.lin] if conv.project else [])

    def forward(self, x, edge_index, size=None):
        if not self._compressing():
            return self._uncompressed_forward(x, edge_index, size)
        if runs_stock(self, x, edge_index, sparse_value_reason(edge_index, None)):
            return super().forward(x, edge_index, size)
        config, seeds = self.iexact_config, self.iexact_seeds
        pair = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
        if self.project:
            pair = (
                CompressedReLUFunction.apply(
                    CompressedLinearFunction.apply(pair[0], self.lin.weight, self.lin.bias, config, seeds)
                ),
                pair[1],
            )
        inputs = message_inputs(self, pair, edge_index, size)
        source, root = inputs.source, inputs.root if self.root_weight else None
        if _row_chunked(edge_index, inputs, root, self.lin_l.weight):
            spec = GraphSpec(inputs.num_src, inputs.num_dst, linear_aggregation(self), self.flow, sparse=True)
            out = RowChunkedSAGEFunction.apply(
                source,
                None if root is source else root,
                self.lin_l.weight,
                None if root is None else self.lin_r.weight,
                plain(edge_index),
                spec,
                config,
                seeds,
            )
        else:
            out = aggregated_linear(
                self, source, root, (self.lin_l.weight, self.lin_r.weight), edge_index, None, inputs
            )
        for bias in (self.lin_r.bias if root is not None else None, self.lin_l.bias):
            if bias is not None:
                out = out.add_(bias)  # in place: out is this conv's own buffer
        return out

    def _uncompressed_forward(self, x, edge_index, size):
        r"""PyG's own forward, :math:`\mathrm{lin}_l(\mathrm{propagate}(X)) + \mathrm{lin}_r(X_t)`.
        Without autograd the root term is added into ``lin_l``'s output in
        place: the same sums bit for bit, one :math:`N \times F` buffer
        fewer (a full-batch ``eval()`` pass on a large graph peaks there).
        On a ``torch.sparse`` CSR graph the targets go a slice of rows at a
        time (:meth:`_row_sliced`), one more :math:`N \times F` fewer.
        Hooks on the linear maps could keep ``lin_l``'s output, so with any
        set PyG's forward runs as it is."""
        if torch.is_grad_enabled() or self.normalize or not self.root_weight or has_forward_hooks(*self.owned(self)):
            return super().forward(x, edge_index, size)
        pair = (x, x) if isinstance(x, torch.Tensor) else tuple(x)
        if self.project:
            pair = (self.lin(pair[0]).relu(), pair[1])
        if pair[1] is not None and _row_sliced_eval(self, pair, edge_index, size):
            return self._row_sliced(pair, plain(edge_index))
        out = self.lin_l(self.propagate(edge_index, x=pair, size=size))
        return out if pair[1] is None else out.add_(self.lin_r(pair[1]))

    def _row_sliced(self, pair, adj_t: torch.Tensor) -> torch.Tensor:
        r""":math:`Y = \mathrm{lin}_r(X_t)`, then :math:`Y_c \mathrel{+}=
        \mathrm{lin}_l(A_c X_s)` for slices :math:`c` of target rows,
        :math:`A_c X_s` by PyG's own ``spmm`` (:func:`~iexact.graph.csr_row_blocks`):
        the pass holds :math:`X_s`, :math:`Y` and one slice, where PyG's holds
        :math:`X_s`, :math:`A X_s` and :math:`Y`. Each row is summed as PyG
        sums it; a slice's linear map may round differently from the whole's
        (a few ulp)."""
        source, target = pair
        lin_l, lin_r = cast(Linear, self.lin_l), cast(Linear, self.lin_r)
        out = lin_r(target)
        for rows, block in csr_row_blocks(adj_t, _slice_width(self, source)):
            out[rows] += lin_l(spmm(block, source, reduce=self.aggr))
        return out


def _slice_width(conv, source: torch.Tensor) -> int:
    """Columns of a row slice's widest buffer: :math:`A_c X_s` or its image."""
    return max(source.size(-1), conv.lin_l.out_channels)


def _row_sliced_eval(conv, pair, structure, size) -> bool:
    """Whether an evaluation of ``conv`` goes by row slices: a ``torch.sparse``
    CSR graph of more target rows than one slice takes, nothing acting inside
    ``propagate``, node-major 2-D features, no ``size`` beyond the graph's
    own, eager."""
    structure = plain(structure)
    return (
        is_sparse(structure)
        and structure.layout == torch.sparse_csr
        and size is None
        and pair[0].dim() == 2
        and conv.node_dim in (0, -2)
        and structure.size(0) > rows_per_slice(_slice_width(conv, pair[0]))
        and stock_reason(conv, pair, structure) is None
        and not torch.compiler.is_compiling()
    )


def _row_chunked(structure, inputs, root, weight) -> bool:
    """Whether :class:`~iexact.autograd.RowChunkedSAGEFunction` computes this
    call: a ``torch.sparse`` CSR graph, node-major 2-D features of one dtype
    (the weights' too, unless autocast casts them), eager (it reads each
    slice's edge range from the host)."""
    structure, source = plain(structure), inputs.source
    return (
        is_sparse(structure)
        and structure.layout == torch.sparse_csr
        and source.dim() == 2
        and inputs.node_dim == 0
        and (root is None or root.dtype == source.dtype)
        and (weight.dtype == source.dtype or torch.is_autocast_enabled(source.device.type))
        and not torch.compiler.is_compiling()
    )
