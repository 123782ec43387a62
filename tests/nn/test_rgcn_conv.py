"""``RGCNConv`` and ``FastRGCNConv``: every relation's weight gradient from the node features stored once."""

import pytest
import torch
from torch_geometric.nn import FastRGCNConv, RGCNConv

import iexact
from iexact import CompressionConfig
from iexact.nn.fallback import FallbackHandler

from .examples import RELATIONS, Example
from .forms import F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("RGCNConv", lambda channels: RGCNConv(channels, 7, RELATIONS), inputs="typed", graphs=("edge_index",)),
    Example(
        "RGCNConv sum, bases",
        lambda channels: RGCNConv(channels, 7, RELATIONS, num_bases=2, aggr="add"),
        inputs="typed",
        graphs=("edge_index", "EdgeIndex"),
    ),
    Example(
        "FastRGCNConv", lambda channels: FastRGCNConv(channels, 7, RELATIONS), inputs="typed", graphs=("EdgeIndex",)
    ),
]


def _types(edge_index, seed=0):
    return torch.randint(0, RELATIONS, (edge_index.shape[1],), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("conv_class", [RGCNConv, FastRGCNConv])
def test_stores_its_input_once_for_every_relation(conv_class):
    conv = iexact.compress_(conv_class(F_IN, F_OUT, RELATIONS), CompressionConfig())
    x = features(N, F_IN) * 1.0  # an activation, not the caller's leaf
    edge_index = edges()
    report = iexact.activation_memory(conv, x, edge_index, _types(edge_index))
    assert report.total == iexact.compress(x.detach(), CompressionConfig()).nbytes and report.uncompressed == 0


@pytest.mark.parametrize("conv_class", [RGCNConv, FastRGCNConv])
@pytest.mark.parametrize("options", [{}, {"root_weight": False, "bias": False}, {"num_bases": 2}, {"aggr": "add"}])
def test_random_relations_and_settings_match_pyg(conv_class, options):
    edge_index = edges()
    compare(
        lambda: conv_class(F_IN, F_OUT, RELATIONS, **options),
        lambda conv, x: conv(x, edge_index, _types(edge_index)),
        [features(N, F_IN)],
    )


def test_bipartite_inputs_store_each_side_once():
    edge_index = edges(12, 5)
    out = compare(
        lambda: RGCNConv((F_IN, 4), F_OUT, RELATIONS),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), edge_index, _types(edge_index)),
        [features(12, F_IN), features(5, 4, seed=3)],
    )
    assert out.shape == (5, F_OUT)


def test_featureless_nodes_run_pygs_forward():
    """Node indices (``x=None``): PyG gathers rows of its weights and keeps no activation to compress."""
    edge_index = edges()
    compare(lambda: RGCNConv(N, F_OUT, RELATIONS), lambda conv: conv(None, edge_index, _types(edge_index)), [])


def test_block_decomposition_takes_the_fallback_and_is_named():
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*RGCNConv, num_blocks"):
        conv = iexact.compress_(RGCNConv(F_IN, F_IN, RELATIONS, num_blocks=2), CompressionConfig())
    assert isinstance(conv, FallbackHandler)
