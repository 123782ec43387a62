"""``GATConv``: inputs once, source features twice (the attention is quadratic in them), scores per node."""

import dataclasses
import warnings

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import GATConv

import iexact

from .examples import Example
from .forms import EIGHT_BITS, F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("GATConv", lambda channels: GATConv(channels, 7, heads=3)),
    Example("GATConv mean residual", lambda channels: GATConv(channels, 7, heads=2, concat=False, residual=True)),
]


def test_static_graphs_are_refused_as_pyg_refuses_them():
    conv, twin = GATConv(F_IN, F_OUT, heads=2), GATConv(F_IN, F_OUT, heads=2)
    iexact.compress_(conv, EIGHT_BITS)
    errors = []
    for layer in (conv, twin):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as error:
                layer(features(3, N, F_IN), edges())
        errors.append((type(error.value), str(error.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex", "size", "no target features"])
@pytest.mark.parametrize(
    "variant", ["shared lin", "lin_src and lin_dst", "residual, mean of heads", "no self-loops", "dropout"]
)
def test_gat_bipartite_inputs(variant, graph_form):
    in_channels = (F_IN, 4) if variant == "lin_src and lin_dst" else F_IN
    options = {
        "shared lin": {},
        "lin_src and lin_dst": {},
        "no self-loops": {"add_self_loops": False},
        "residual, mean of heads": {"residual": True, "concat": False},
        "dropout": {"dropout": 0.3},
    }[variant]
    edge_index = edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    kwargs = {"size": (12, 5)} if graph_form in ("size", "no target features") else {}
    x_dst = (
        None
        if graph_form == "no target features"
        else features(5, 4 if isinstance(in_channels, tuple) else F_IN, seed=3)
    )
    out = compare(
        lambda: GATConv(in_channels, F_OUT, heads=2, **options),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), graph, **kwargs),
        [features(12, F_IN), x_dst],
    )
    assert out.shape == (5, F_OUT * (1 if "mean" in variant else 2))


def test_gat_bipartite_weights_on_one_node_set_and_what_is_kept():
    """A conv built for a pair of in_channels applies lin_src and lin_dst to one tensor, as PyG does."""
    compare(
        lambda: GATConv((F_IN, F_IN), F_OUT, heads=2, residual=True),
        lambda conv, x: conv(x, edges()),
        [features(N, F_IN)],
    )
    conv = iexact.compress_(GATConv((F_IN, 4), F_OUT, heads=2), dataclasses.replace(EIGHT_BITS, reference_inputs=False))
    report = iexact.activation_memory(conv, (torch.randn(12, F_IN), torch.randn(5, 4)), edges(12, 5))
    assert report.uncompressed == 4 * (5 + 12) * 2  # the exact scores
    # 8-bit codes of x_src and x_dst, of the source features twice and the target features once
    # (2 heads x 5 channels); float32 scores of both sides
    assert sorted(row.nbytes for row in report.saved if row.dtype == torch.uint8) == [20, 50, 72, 120, 120]
    assert sorted(row.shape for row in report.saved if row.dtype == torch.float32) == [(5, 2), (12, 2)]


def test_gat_pairs_under_target_to_source_run_the_stock_forward():
    def build():
        conv = GATConv(F_IN, F_OUT, heads=2)
        conv.flow = "target_to_source"
        return conv

    compare(
        build,
        lambda conv, x_src, x_dst: conv((x_src, x_dst), edges(5, 12)),
        [features(12, F_IN), features(5, F_IN, seed=3)],
        warns="target_to_source",
    )


def test_features_of_a_frozen_linear_map_are_compressed_not_referenced():
    """With ``lin`` frozen and an input that needs no gradient, the features
    ``lin`` makes have no ``grad_fn``, yet no caller holds them: they are
    compressed (twice, for the attention's gradient), never kept whole."""
    torch.manual_seed(0)
    conv = GATConv(16, 8, heads=2)
    conv.lin.weight.requires_grad_(False)
    iexact.compress_(conv, iexact.CompressionConfig())
    report = iexact.activation_memory(conv, torch.randn(200, 16), torch.randint(0, 200, (2, 1000)))
    assert report.uncompressed == 2 * 200 * 2 * 4  # the exact scores of both sides, per node and head
    assert not any(saved.shape == (200, 2, 8) for saved in report.saved)  # once kept whole, as a reference
    assert report.compressed < 200 * 2 * 8 * 4  # below the (N, H, C) features in float32, scores included
