"""``GINEConv``: one sign bit per message element, PyG's forward op for op."""

import copy

import pytest
import torch
from torch_geometric.nn import GINEConv
from torch_geometric.utils import to_torch_csr_tensor

import iexact
from iexact import CompressionConfig

from .examples import Example
from .forms import F_IN, N, WithEdgeFeatures, compare, compiles_as_eager, edges, features


def _mlp(channels: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(channels, 8), torch.nn.ReLU(), torch.nn.Linear(8, 7))


EXAMPLES = [
    Example(
        "GINEConv edge_dim",
        lambda channels: WithEdgeFeatures(GINEConv(_mlp(channels), edge_dim=3), 3),
        graphs=("edge_index", "EdgeIndex"),
    ),
    Example(
        "GINEConv train_eps mean",
        lambda channels: WithEdgeFeatures(GINEConv(_mlp(channels), train_eps=True, aggr="mean"), channels),
        graphs=("edge_index", "EdgeIndex"),
    ),
]


def test_the_messages_keep_one_bit_per_element_and_nothing_else():
    x, edge_index = features(100, 16) * 1.0, edges(100, 100, count=800)  # x an activation, not the caller's
    conv = iexact.compress_(GINEConv(torch.nn.Identity()), CompressionConfig())
    report = iexact.activation_memory(conv, x, edge_index, torch.randn(800, 16))
    assert report.total == report.compressed == -(-800 * 16 // 8)


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16 autocast"])
@pytest.mark.parametrize("bipartite", [False, True])
def test_outputs_are_the_stock_convs_bit_for_bit_in_training(bipartite, autocast):
    conv = GINEConv(_mlp(F_IN), edge_dim=3)
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x = (features(12, F_IN), features(5, F_IN, seed=3)) if bipartite else features(N, F_IN)
    edge_index = edges(12, 5) if bipartite else edges()
    edge_attr = torch.randn(edge_index.shape[1], 3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert torch.equal(conv(x, edge_index, edge_attr), twin(x, edge_index, edge_attr))


def test_a_sparse_adjacency_runs_the_stock_forward_with_a_warning():
    edge_index = edges()
    adj = to_torch_csr_tensor(edge_index.flip(0), size=(N, N))
    compare(
        lambda: GINEConv(_mlp(F_IN), edge_dim=3),
        lambda conv, x: conv(x, adj, torch.randn(adj._nnz(), 3, generator=torch.Generator().manual_seed(5))),
        [features(N, F_IN)],
        warns="edge_attr is not an (E, D) matrix beside an edge_index",
    )


def test_max_aggregation_takes_the_fallback():
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*GINEConv, aggr='max'"):
        iexact.compress_(GINEConv(_mlp(F_IN), aggr="max"), CompressionConfig())


def test_compiles_without_graph_breaks_and_trains_as_eager():
    conv = iexact.compress_(GINEConv(_mlp(F_IN), edge_dim=3, train_eps=True), CompressionConfig())
    x, edge_index, edge_attr = features(N, F_IN), edges(), torch.randn(60, 3)
    compiles_as_eager(conv, x, edge_index, edge_attr)
