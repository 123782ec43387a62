"""``ResGatedGraphConv``: inputs once, values compressed, gates and their derivatives compressed."""

import dataclasses

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import ResGatedGraphConv

import iexact
from iexact.nn import is_compressed

from .examples import Example
from .forms import EIGHT_BITS, F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("ResGatedGraphConv", lambda channels: ResGatedGraphConv(channels, 7)),
    Example(
        "ResGatedGraphConv no root", lambda channels: ResGatedGraphConv(channels, 7, root_weight=False, bias=False)
    ),
]


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex"])
@pytest.mark.parametrize("in_channels", [F_IN, (F_IN, 4)], ids=["one width", "two widths"])
def test_res_gated_bipartite_inputs(graph_form, in_channels):
    edge_index = edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    width = in_channels[1] if isinstance(in_channels, tuple) else F_IN
    out = compare(
        lambda: ResGatedGraphConv(in_channels, F_OUT),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), graph),
        [features(12, F_IN), features(5, width, seed=3)],
    )
    assert out.shape == (5, F_OUT)


def test_res_gated_keeps_codes_of_inputs_values_and_gates():
    conv = iexact.compress_(ResGatedGraphConv(F_IN, F_OUT), dataclasses.replace(EIGHT_BITS, reference_inputs=False))
    edge_index = edges()
    report = iexact.activation_memory(conv, torch.randn(N, F_IN), edge_index)
    assert report.uncompressed == 0
    count = edge_index.shape[1]
    assert sorted(row.nbytes for row in report.saved if row.dtype == torch.uint8) == sorted(
        [N * F_IN, N * F_OUT, count * F_OUT, count * F_OUT]
    )


def test_edge_features_and_other_gates_take_the_fallback():
    for conv in (ResGatedGraphConv(F_IN, F_OUT, edge_dim=3), ResGatedGraphConv(F_IN, F_OUT, act=torch.nn.Tanh())):
        with pytest.warns(UserWarning, match="saved-tensor fallback"):
            iexact.compress_(conv, EIGHT_BITS)
        assert is_compressed(conv) and is_compressed(conv.act)


def test_the_gate_every_instance_shares_is_not_converted_for_all():
    """PyG's default act=Sigmoid() is one module for every ResGatedGraphConv:
    converting one conv (its gate through the fallback) leaves the others' as they are."""
    converted, other = ResGatedGraphConv(F_IN, F_OUT, edge_dim=3), ResGatedGraphConv(F_IN, F_OUT)
    assert converted.act is other.act
    with pytest.warns(UserWarning, match="saved-tensor fallback"):
        iexact.compress_(converted, EIGHT_BITS)
    assert is_compressed(converted.act) and type(other.act) is torch.nn.Sigmoid
    assert type(ResGatedGraphConv(F_IN, F_OUT).act) is torch.nn.Sigmoid
