"""``SoftmaxAggregation``: weights, output and elements compressed (GENConv's softmax aggregation)."""

import warnings

import pytest
import torch
from torch_geometric.nn import GENConv
from torch_geometric.nn.aggr import SoftmaxAggregation

import iexact
from iexact.autograd import softmax_aggregation
from iexact.nn import is_compressed

from .bias import ROWS, one_copy_fails
from .examples import Example
from .forms import EIGHT_BITS, F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("SoftmaxAggregation", lambda channels: SoftmaxAggregation(), inputs="index"),
    Example("SoftmaxAggregation learned t", lambda channels: SoftmaxAggregation(learn=True), inputs="index"),
    Example(
        "SoftmaxAggregation learned t per channel",
        lambda channels: SoftmaxAggregation(t=0.5, learn=True, channels=channels),
        inputs="index",
    ),
    Example(
        "SoftmaxAggregation semi-gradient", lambda channels: SoftmaxAggregation(t=2.0, semi_grad=True), inputs="index"
    ),
]


@pytest.mark.parametrize("dim", [0, 1, -2])
def test_any_dim(dim):
    x = features(3, 9, 4).movedim(1, dim).detach().requires_grad_()  # the 9 elements along dim
    index = torch.tensor([0, 0, 1, 2, 2, 2, 4, 4, 4])
    compare(lambda: SoftmaxAggregation(learn=True), lambda module, x: module(x, index, dim_size=5, dim=dim), [x])


@pytest.mark.parametrize("options", [{}, {"learn_t": True}, {"learn_p": True, "aggr": "powermean"}, {"edge_dim": 3}])
def test_genconv_compresses_its_softmax(options):
    """GENConv's handler calls its aggregation module; a powermean one takes the fallback (and its conv)."""
    edge_attr = features(edges().shape[1], 3, seed=4) if "edge_dim" in options else None
    aggr = options.pop("aggr", "softmax")

    def build():
        return GENConv(F_IN, F_OUT, aggr=aggr, **options)

    compare(build, lambda conv, x: conv(x, edges(), edge_attr), [features(N, F_IN)])
    conv = build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        iexact.compress_(conv, EIGHT_BITS)
    assert is_compressed(conv.aggr_module)
    assert any("saved-tensor fallback" in str(w.message) for w in caught) == (aggr == "powermean")


def test_the_temperature_gradient_is_biased_with_one_copy_of_the_elements(monkeypatch):
    """dt reads the elements twice (the loss sums the output: the bias of each
    term then adds up rather than cancelling over random gradient signs)."""
    torch.manual_seed(0)
    x = torch.randn(ROWS, 6)
    index = torch.arange(ROWS).mul_(7919).remainder_(ROWS // 4)
    module = SoftmaxAggregation(t=2.0, learn=True)
    one_copy_fails(
        monkeypatch, module, softmax_aggregation, lambda layer: layer(x, index, dim_size=ROWS // 4).sum().view(1), "t"
    )
