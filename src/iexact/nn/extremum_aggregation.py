r"""PyG's ``MaxAggregation`` and ``MinAggregation`` (``aggr="max"``, PNA's max and min): one bit per element."""

from __future__ import annotations

from torch_geometric.nn.aggr import MaxAggregation, MinAggregation

from ..autograd import ScatterExtremumFunction
from .aggregation import GroupAggregationHandler
from .handler import register_handler


@register_handler(MaxAggregation, MinAggregation)
class ExtremumAggregationHandler(GroupAggregationHandler):
    r""":math:`\max_{i \in g} x_i` (or the minimum) of each group's elements, as
    PyG's ``scatter`` computes it on the CPU (``scatter_reduce`` with
    ``include_self=False``, an empty group 0), through
    :class:`~iexact.autograd.ScatterExtremumFunction`: outputs bit for bit
    the stock module's, and torch's gradient, each group's shared evenly
    among its elements equal to the extremum (``torch_scatter``, which PyG
    prefers on CUDA when it is installed, gives a tie's gradient to one of
    them: the same sum), along any ``dim``
    (:class:`~iexact.nn.aggregation.GroupAggregationHandler` says which calls
    are compressed).

    Stores: one bit per element (whether it is its group's extremum) and one
    per output element (whether it equals the 0 it started from, which
    torch counts among the ties), where torch keeps the elements and the output.
    """

    def aggregate_rows(self, rows, index, groups):
        out = rows.new_zeros(groups, rows.shape[1])
        reduce = "amax" if isinstance(self, MaxAggregation) else "amin"
        return ScatterExtremumFunction.apply(out, 0, index.view(-1, 1).expand_as(rows), rows, reduce)
