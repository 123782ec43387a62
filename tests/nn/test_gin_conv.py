"""``GINConv``: nothing of its own but with ``train_eps``; its network converted module by module."""

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import GIN, MLP, GINConv

import iexact

from .examples import Example
from .forms import F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("GINConv train_eps", lambda channels: GINConv(MLP([channels, 16, 7], norm="batch_norm"), train_eps=True)),
    Example("GINConv linear", lambda channels: GINConv(torch.nn.Linear(channels, 5), train_eps=True)),
]


def test_static_graphs():
    """x of shape (B, N, F) with node_dim=-2 aggregates along N."""
    build = lambda: GINConv(torch.nn.Linear(F_IN, F_OUT), train_eps=True)  # noqa: E731
    out = compare(build, lambda conv, x: conv(x, edges()), [features(3, N, F_IN)])
    assert out.shape == (3, N, F_OUT)


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex", "size"])
def test_bipartite_inputs(graph_form):
    edge_index = edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    kwargs = {"size": (12, 5)} if graph_form == "size" else {}
    x_dst = None if graph_form != "tensor" else features(5, F_IN, seed=3)
    out = compare(
        lambda: GINConv(torch.nn.Linear(F_IN, F_OUT), train_eps=True),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), graph, **kwargs),
        [features(12, F_IN), x_dst],
    )
    assert out.shape == (5, F_OUT)


def test_the_first_layers_aggregation_is_compressed_not_kept_by_reference():
    """In the first layer the aggregation of data.x needs no gradient: its MLP's first linear map
    kept it by reference (a full-precision N x D tensor nothing else holds); it keeps it compressed."""
    torch.manual_seed(0)
    model = GIN(F_IN, 16, num_layers=2, out_channels=F_OUT)
    x, edge_index = features(200, F_IN).detach(), edges(200, 200, count=800)
    iexact.compress_(model, iexact.CompressionConfig())
    report = iexact.activation_memory(model, x, edge_index)
    first = [saved for saved in report.saved if saved.layer == "convs.0.nn.lins.0"]
    # codes, scales and the center (one float32 per column), never the N x D float32 tensor
    assert first and all(saved.dtype != torch.float32 or saved.shape == (F_IN,) for saved in first)
    assert sum(saved.nbytes for saved in first) < x.nbytes // 8
