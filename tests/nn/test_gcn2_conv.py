"""``GCN2Conv``: the input of its weight product compressed."""

import warnings

import pytest
from torch_geometric.nn import GCN2Conv

import iexact

from .examples import Example
from .forms import EIGHT_BITS, F_IN, N, edges, features

EXAMPLES = [
    Example("GCN2Conv", lambda channels: GCN2Conv(channels, alpha=0.2, theta=0.5, layer=2), "graph2"),
    Example(
        "GCN2Conv unshared",
        lambda channels: GCN2Conv(channels, alpha=0.2, theta=0.5, layer=2, shared_weights=False),
        "graph2",
    ),
]


def test_static_graphs_are_refused_as_pyg_refuses_them():
    conv, twin = GCN2Conv(F_IN, alpha=0.1), GCN2Conv(F_IN, alpha=0.1)
    iexact.compress_(conv, EIGHT_BITS)
    errors = []
    for layer in (conv, twin):
        x = features(3, N, F_IN)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as error:
                layer(x, x.detach() * 0.5, edges())
        errors.append((type(error.value), str(error.value)))
    assert errors[0] == errors[1]
