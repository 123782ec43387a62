"""``GraphConv``: its input stored once for both linear maps, the edge weights honoured."""

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import GraphConv
from torch_geometric.utils import to_torch_csr_tensor

import iexact
from iexact import CompressionConfig
from iexact.nn.fallback import FallbackHandler

from .examples import Example
from .forms import F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("GraphConv", lambda channels: GraphConv(channels, 7)),
    Example("GraphConv mean", lambda channels: GraphConv(channels, 7, aggr="mean")),
]


def test_stores_its_input_once():
    conv = iexact.compress_(GraphConv(F_IN, 7), CompressionConfig())
    x = features(N, F_IN) * 1.0  # an activation, not the caller's leaf
    report = iexact.activation_memory(conv, x, edges())
    assert report.total == iexact.compress(x.detach(), CompressionConfig()).nbytes and report.uncompressed == 0


@pytest.mark.parametrize("aggr", ["add", "mean"])
@pytest.mark.parametrize("graph_form", ["edge_index", "EdgeIndex", "csr"])
def test_edge_weights_weigh_the_sum_as_in_pyg(aggr, graph_form):
    """``edge_weight`` with an edge index; a sparse adjacency's own values (PyG ignores ``edge_weight`` there)."""
    edge_index = edges()
    weight = torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(7))
    if graph_form == "csr":
        graph, kwargs = to_torch_csr_tensor(edge_index.flip(0), weight, size=(N, N)), {"edge_weight": weight * 5}
    else:
        graph = EdgeIndex(edge_index, sparse_size=(N, N)) if graph_form == "EdgeIndex" else edge_index
        kwargs = {"edge_weight": weight}
    compare(lambda: GraphConv(F_IN, F_OUT, aggr=aggr), lambda conv, x: conv(x, graph, **kwargs), [features(N, F_IN)])


def test_edge_weights_that_need_a_gradient_get_it():
    edge_index = edges()
    weight = features(edge_index.shape[1], seed=7)
    compare(lambda: GraphConv(F_IN, F_OUT), lambda conv, x, w: conv(x, edge_index, w), [features(N, F_IN), weight])


def test_static_graphs():
    """x of shape (B, N, F) with node_dim=-2 aggregates along N."""
    out = compare(lambda: GraphConv(F_IN, F_OUT), lambda conv, x: conv(x, edges()), [features(3, N, F_IN)])
    assert out.shape == (3, N, F_OUT)


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex", "size"])
def test_bipartite_inputs(graph_form):
    edge_index = edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    kwargs = {"size": (12, 5)} if graph_form == "size" else {}
    x_dst = None if graph_form != "tensor" else features(5, 4, seed=3)
    out = compare(
        lambda: GraphConv((F_IN, 4), F_OUT),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), graph, **kwargs),
        [features(12, F_IN), x_dst],
    )
    assert out.shape == (5, F_OUT)


def test_max_aggregation_takes_the_fallback_and_is_named():
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*GraphConv, aggr='max'"):
        conv = iexact.compress_(GraphConv(F_IN, F_OUT, aggr="max"), CompressionConfig())
    assert isinstance(conv, FallbackHandler)
