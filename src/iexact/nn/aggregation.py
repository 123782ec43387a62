r"""What the compressed convs share: the aggregation :math:`A X` that keeps nothing,
and the base of the handlers of PyG's ``Aggregation`` modules."""

from __future__ import annotations

import math

import torch
from torch_geometric.nn.aggr import MeanAggregation, SumAggregation

from ..autograd import AggregateFunction, CompressedLinearFunction, SharedInputLinearFunction
from ..autograd.saving import keep_mark
from ..graph import GraphSpec, is_sparse
from .handler import HANDLERS, CompressedModule
from .message_inputs import MessageInputs

_REDUCE = {"add": "sum", "sum": "sum", "mean": "mean"}


def linear_aggregation(conv) -> str | None:
    """``"sum"`` / ``"mean"`` for a conv whose aggregation is a (weighted) sum or mean, else ``None``."""
    return _REDUCE.get(conv.aggr) if isinstance(conv.aggr, str) else None


def compressed_aggregation(module: torch.nn.Module) -> bool:
    """Whether PyG's aggregation ``module``, called by a conv's handler on its
    messages, keeps nothing whole: a sum or a mean (which keep nothing) or a
    module with a handler (max, min, var, std, softmax)."""
    return type(module) in (SumAggregation, MeanAggregation) or type(module) in HANDLERS


def aggregate(
    conv,
    x: torch.Tensor,
    structure,
    edge_weight: torch.Tensor | None,
    inputs: MessageInputs,
    *,
    gcn: tuple[bool, bool] | None = None,
    scale: float = 1.0,
    root: torch.Tensor | None = None,
) -> torch.Tensor:
    r""":math:`A X` (plus ``root``) as ``conv`` aggregates (its sum or mean and
    its ``flow``), along ``inputs.node_dim`` (a static-graph batch
    :math:`(B, N, F)` aggregates along :math:`N`), through
    :class:`~iexact.autograd.AggregateFunction` with the conv's config and
    seed stream: it keeps nothing unless ``edge_weight`` needs a gradient.
    ``gcn`` normalizes on the fly, ``scale`` multiplies (GCNII's
    :math:`1 - \alpha`). A ``root`` the conv made itself (and nothing else
    holds) is summed into in place: :math:`A X + R` then costs no buffer
    beyond :math:`R`."""
    reduce = linear_aggregation(conv)
    assert reduce is not None  # the handlers refuse other aggregations (unsupported)
    spec = GraphSpec(inputs.num_src, inputs.num_dst, reduce, conv.flow, gcn, scale, is_sparse(structure))
    node_dim = inputs.node_dim
    # (a compiled graph plans its own buffers, and Dynamo traces no mark_dirty in a Function's forward)
    fold = (
        root is not None
        and not node_dim
        and root.dtype == x.dtype
        and root.is_contiguous()
        and not torch.compiler.is_compiling()
    )
    rows = x.movedim(node_dim, 0) if node_dim else x
    config, seeds = conv.iexact_config, conv.iexact_seeds
    out = AggregateFunction.apply(rows, edge_weight, structure, spec, config, seeds, root if fold else None)
    out = out.movedim(0, node_dim) if node_dim else out
    return out if root is None or fold else out + root


def aggregated_linear(
    conv,
    source: torch.Tensor,
    root: torch.Tensor | None,
    weights: tuple[torch.Tensor, torch.Tensor],
    structure,
    edge_weight: torch.Tensor | None,
    inputs: MessageInputs,
) -> torch.Tensor:
    r""":math:`A (X_s W_n^\top) + X_t W_r^\top` for ``weights`` :math:`(W_n,
    W_r)`, without biases: a linear map before the aggregation and one on the
    root, as SAGE and GraphConv compute :math:`W_n (A X_s) + W_r X_t`
    (aggregation is linear, so :math:`W_n` moves inside it). When the root is
    the source itself (``root is source``) it is compressed once for both maps
    (:class:`~iexact.autograd.SharedInputLinearFunction`); ``root`` ``None``
    drops the root term.

    Stores: :math:`X_s` compressed, and :math:`X_t` when it is another tensor.
    """
    config, seeds = conv.iexact_config, conv.iexact_seeds
    neighbour_weight, root_weight = weights
    if root is source:
        neighbour, out_root = SharedInputLinearFunction.apply(source, config, seeds, neighbour_weight, root_weight)
    else:
        neighbour = CompressedLinearFunction.apply(source, neighbour_weight, None, config, seeds)
        out_root = None if root is None else CompressedLinearFunction.apply(root, root_weight, None, config, seeds)
    return aggregate(conv, neighbour, structure, edge_weight, inputs, root=out_root)


def sparse_value_reason(structure, edge_weight) -> str | None:
    """A ``torch.sparse`` adjacency whose values need a gradient: the compressed
    path does not differentiate sparse values, so the module's own forward runs."""
    weight_grad = edge_weight is not None and edge_weight.requires_grad
    if is_sparse(structure) and (structure.requires_grad or weight_grad):
        return "the sparse adjacency's values need a gradient"
    return None


class GroupAggregationHandler(CompressedModule):
    """Base of the handlers of PyG's ``Aggregation`` modules: a call with
    ``index`` and ``dim_size`` (as PyG's convs make them) on floating
    elements aggregates them along ``dim`` through :meth:`aggregate_rows`, on
    the elements with ``dim`` moved first and the rest flattened; ``ptr``
    alone, or no ``dim_size`` (whose inference reads the index's largest
    value), take the module's own path."""

    def check_input(self, x: torch.Tensor, dim: int) -> None:
        """Raise PyG's error for an input the module refuses (nothing by default)."""

    def aggregate_rows(self, rows: torch.Tensor, index: torch.Tensor, groups: int) -> torch.Tensor:
        r"""The aggregation of the rows of ``rows`` :math:`(E, R)` by ``index``, :math:`(\text{groups}, R)`."""
        raise NotImplementedError

    def forward(self, x, index=None, ptr=None, dim_size=None, dim=-2):
        if (
            not self._compressing()
            or index is None
            or dim_size is None
            or not isinstance(x, torch.Tensor)
            or not x.is_floating_point()
        ):
            return super().forward(x, index, ptr, dim_size, dim)
        self.check_input(x, dim)
        rows = x.movedim(dim, 0)
        flat = keep_mark(x, rows.reshape(rows.shape[0], math.prod(rows.shape[1:])))  # no rows too
        out = self.aggregate_rows(flat, index, dim_size)
        return out.view(dim_size, *rows.shape[1:]).movedim(0, dim)
