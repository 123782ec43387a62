"""``VarAggregation`` and ``StdAggregation``: the centred elements kept compressed, PNA's std aggregation."""

import copy

import pytest
import torch
from torch_geometric.nn import PNAConv
from torch_geometric.nn.aggr import StdAggregation, VarAggregation

import iexact
from iexact.nn import is_compressed

from .examples import Example
from .forms import EIGHT_BITS, F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("VarAggregation", lambda channels: VarAggregation(), inputs="index"),
    Example("StdAggregation", lambda channels: StdAggregation(), inputs="index"),
    Example("StdAggregation semi-gradient", lambda channels: StdAggregation(semi_grad=True), inputs="index"),
]


@pytest.mark.parametrize("aggregation", [VarAggregation, StdAggregation])
@pytest.mark.parametrize("dim", [0, 1, -2])
def test_any_dim_and_a_zero_deviation(aggregation, dim):
    """Along any dim; a group of one element, or of equal ones, has deviation 0 (read as 0, no gradient)."""
    x = features(3, 9, 4).movedim(1, dim).detach().requires_grad_()  # the 9 elements along dim
    index = torch.tensor([0, 0, 1, 2, 2, 2, 4, 4, 4])

    def run(module, x):
        x = x.index_fill(dim, torch.tensor([6, 7, 8]), 0.5)  # group 4: equal elements
        return module(x, index, dim_size=5, dim=dim)

    compare(aggregation, run, [x])


def test_without_dim_size_the_stock_forward_runs():
    module = iexact.compress_(StdAggregation(), EIGHT_BITS)
    x, index = torch.randn(9, 4, requires_grad=True), torch.tensor([0, 0, 1, 2, 2, 2, 4, 4, 4])
    torch.testing.assert_close(module(x, index), copy.deepcopy(StdAggregation())(x, index))


def test_pna_with_std_keeps_the_elements_compressed():
    degree = torch.bincount(torch.bincount(edges()[1], minlength=N))
    build = lambda: PNAConv(F_IN, F_OUT, ["mean", "max", "std"], ["identity", "amplification"], degree)  # noqa: E731
    compare(build, lambda conv, x: conv(x, edges()), [features(N, F_IN)], warns=None)
    conv = iexact.compress_(build(), EIGHT_BITS)  # its own handler, no fallback (compare saw no warning)
    std = conv.aggr_module.aggr.aggrs[2]
    assert is_compressed(std) and not is_compressed(std.var_aggr)  # the handler computes its variance itself
