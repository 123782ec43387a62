"""``TransformerConv``: queries, keys and values once each, edge features twice, attention weights exact."""

import dataclasses

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import TransformerConv

import iexact
from iexact.autograd import transformer

from .bias import ROWS, one_copy_fails, random_graph
from .examples import Example
from .forms import EIGHT_BITS, F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("TransformerConv", lambda channels: TransformerConv(channels, 7, heads=3)),
    Example(
        "TransformerConv gated mean dropout",
        lambda channels: TransformerConv(channels, 7, heads=2, concat=False, beta=True, dropout=0.2),
    ),
]
EDGE_DIM = 3


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex"])
@pytest.mark.parametrize(
    "variant", ["plain", "no root weight", "gated, mean of heads", "edge features", "edge features, gated"]
)
@pytest.mark.parametrize("bipartite", [False, True], ids=["one node set", "pair"])
def test_transformer_inputs(variant, graph_form, bipartite):
    options = {
        "plain": {},
        "no root weight": {"root_weight": False},
        "gated, mean of heads": {"beta": True, "concat": False},
        "edge features": {"edge_dim": EDGE_DIM},
        "edge features, gated": {"edge_dim": EDGE_DIM, "beta": True},
    }[variant]
    num_src, num_dst = (12, 5) if bipartite else (N, N)
    edge_index = edges(num_src, num_dst)
    graph = EdgeIndex(edge_index, sparse_size=(num_src, num_dst)) if graph_form == "EdgeIndex" else edge_index
    edge_attr = features(edge_index.shape[1], EDGE_DIM, seed=4) if "edge" in variant else None
    x = [features(num_src, F_IN), features(num_dst, F_IN, seed=3) if bipartite else None]
    out = compare(
        lambda: TransformerConv(F_IN, F_OUT, heads=2, **options),
        lambda conv, x_src, x_dst, attr: conv(x_src if x_dst is None else (x_src, x_dst), graph, attr),
        [*x, edge_attr],
    )
    assert out.shape == (num_dst, F_OUT * (1 if "mean" in variant else 2))


def test_edge_features_beside_a_sparse_adjacency_run_the_stock_forward():
    edge_index = edges()
    adj = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.shape[1]), (N, N)).coalesce()
    compare(
        lambda: TransformerConv(F_IN, F_OUT, heads=2, edge_dim=EDGE_DIM),
        lambda conv, x, attr: conv(x, adj, attr),
        [features(N, F_IN), features(adj._nnz(), EDGE_DIM, seed=4)],
        warns="edge_attr is not an (E, D) matrix beside an edge_index",
    )


def test_transformer_keeps_codes_and_weights():
    config = dataclasses.replace(EIGHT_BITS, reference_inputs=False)
    conv = iexact.compress_(TransformerConv(F_IN, F_OUT, heads=2, edge_dim=EDGE_DIM), config)
    edge_index = edges()
    count = edge_index.shape[1]
    report = iexact.activation_memory(conv, torch.randn(N, F_IN), edge_index, torch.randn(count, EDGE_DIM))
    assert report.uncompressed == 0
    # 8-bit codes: x once and edge_attr once (their linear maps); queries, keys and values once,
    # the projected edge features twice (2 heads x F_OUT) and the attention weights twice (per edge and head)
    codes = [N * F_IN, count * EDGE_DIM, *(3 * [N * 2 * F_OUT]), *(2 * [count * 2 * F_OUT]), *(2 * [count * 2])]
    assert sorted(row.nbytes for row in report.saved if row.dtype == torch.uint8) == sorted(codes)
    assert not [row for row in report.saved if row.dtype == torch.float32 and row.nbytes > 64]


@pytest.mark.slow
def test_the_query_gradient_is_biased_with_one_copy_of_the_edge_features(monkeypatch):
    """The queries' gradient multiplies the projected edge features twice."""
    torch.manual_seed(0)
    x, graph = torch.randn(ROWS, F_IN), random_graph("edge_index", "cpu", ROWS, 5 * ROWS)
    edge_attr = 3 * torch.randn(graph.shape[1], EDGE_DIM)  # their noise then weighs more beside the values'
    conv = TransformerConv(F_IN, 4, heads=2, edge_dim=EDGE_DIM, root_weight=False)
    one_copy_fails(monkeypatch, conv, transformer, lambda layer: layer(x, graph, edge_attr), "lin_query.weight")
