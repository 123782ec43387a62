"""``GENConv``: one sign bit per message element, PyG's forward op for op."""

import copy

import pytest
import torch
from torch_geometric.nn import GENConv

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed

from .examples import Example
from .forms import F_IN, N, WithEdgeFeatures, compare, compiles_as_eager, edges, features

EXAMPLES = [
    Example(
        "GENConv max, in and out as wide (PyG's reverse flow needs it)",
        lambda channels: GENConv(channels, channels, aggr="max", norm="layer"),
    ),
    Example(
        "GENConv mean, learned msg_norm",
        lambda channels: GENConv(channels, 7, aggr="mean", num_layers=3, msg_norm=True, learn_msg_scale=True),
    ),
    Example("GENConv softmax learned t, no lin_src", lambda channels: GENConv(channels, channels, learn_t=True)),
    Example(
        "GENConv softmax learned t edge_dim",
        lambda channels: WithEdgeFeatures(GENConv(channels, 7, learn_t=True, edge_dim=3), 3),
        graphs=("edge_index", "EdgeIndex"),
    ),
    Example(
        "GENConv sum, edge features as wide as the messages",
        lambda channels: WithEdgeFeatures(GENConv(channels, 7, aggr="sum", edge_dim=7), 7),
        graphs=("edge_index", "EdgeIndex"),
    ),
]


def test_without_edge_features_the_relu_keeps_one_bit_per_source_node_and_channel():
    x, edge_index = features(100, 16) * 1.0, edges(100, 100, count=800)  # x an activation, not the caller's
    conv = iexact.compress_(GENConv(16, 16, aggr="mean", num_layers=1), CompressionConfig())
    layers = {layer.name: layer for layer in iexact.activation_memory(conv, x, edge_index).layers}
    assert (layers["(model)"].compressed, layers["(model)"].uncompressed) == (100 * 16 // 8, 0)


def test_with_edge_features_one_bit_per_message_element():
    x, edge_index = features(100, 16) * 1.0, edges(100, 100, count=800)
    conv = iexact.compress_(GENConv(16, 16, aggr="sum", num_layers=1), CompressionConfig())
    layers = {layer.name: layer for layer in iexact.activation_memory(conv, x, edge_index, torch.randn(800, 16)).layers}
    assert (layers["(model)"].compressed, layers["(model)"].uncompressed) == (800 * 16 // 8, 0)
    assert "aggr_module" not in layers  # a sum keeps nothing


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16 autocast"])
@pytest.mark.parametrize("bipartite", [False, True])
def test_outputs_are_the_stock_convs_bit_for_bit_in_training(bipartite, autocast):
    conv = GENConv((F_IN, 4) if bipartite else F_IN, 8, learn_t=True, edge_dim=3, msg_norm=True, norm="layer")
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x = (features(12, F_IN), features(5, 4, seed=3)) if bipartite else features(N, F_IN)
    edge_index = edges(12, 5) if bipartite else edges()
    edge_attr = torch.randn(edge_index.shape[1], 3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert torch.equal(conv(x, edge_index, edge_attr), twin(x, edge_index, edge_attr))


def test_a_source_only_pair_and_the_reverse_flow():
    compare(lambda: GENConv((F_IN, F_IN), 5), lambda conv, x: conv((x, None), edges(N, 12)), [features(N, F_IN)])
    compare(lambda: GENConv(F_IN, F_IN, flow="target_to_source"), lambda conv, x: conv(x, edges()), [features(N, F_IN)])


def test_edge_features_of_another_width_without_edge_dim_take_the_stock_forward():
    conv = iexact.compress_(GENConv(F_IN, 5, aggr="sum"), CompressionConfig())
    with pytest.warns(UserWarning, match="differ in width without edge_dim"), pytest.raises(AssertionError):
        conv(features(N, F_IN), edges(), torch.randn(60, 3))


@pytest.mark.parametrize("aggr", ["powermean", ["mean", "max"]])
def test_other_aggregations_take_the_fallback(aggr):
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*<model> \(GENConv, aggr="):
        conv = iexact.compress_(GENConv(F_IN, 5, aggr=aggr), CompressionConfig())
    assert not is_compressed(conv) or type(conv).__name__ == "CompressedGENConv"


def test_compiles_without_graph_breaks_and_trains_as_eager():
    conv = iexact.compress_(GENConv(F_IN, 8, learn_t=True, edge_dim=3), CompressionConfig())
    x, edge_index, edge_attr = features(N, F_IN), edges(), torch.randn(60, 3)
    compiles_as_eager(conv, x, edge_index, edge_attr)
