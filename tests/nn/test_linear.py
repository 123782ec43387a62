"""``torch.nn.Linear`` and PyG's ``Linear``: the input compressed."""

import pytest
import torch
from torch_geometric.nn import GATConv, GATv2Conv, ResGatedGraphConv, TransformerConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear

import iexact

from .examples import Example

EXAMPLES = [
    Example("Linear", lambda channels: torch.nn.Linear(channels, 7), "x"),
    Example("PyG Linear", lambda channels: PyGLinear(channels, 7), "x"),
]


@pytest.mark.parametrize(
    "conv",
    [
        lambda: GATConv(32, 8, heads=2),
        lambda: GATv2Conv(32, 8, heads=2),
        lambda: TransformerConv(32, 8, heads=2),
        lambda: ResGatedGraphConv(32, 8),
    ],
    ids=["GATConv", "GATv2Conv", "TransformerConv", "ResGatedGraphConv"],
)
def test_attention_and_gated_convs_keep_their_input_unprojected_unless_rp_edge_convs(conv):
    """The conv's per-edge tensors are kept the same either way; only its
    input (one compressed copy for all its linear maps) changes width."""
    x, edge_index = torch.randn(100, 32), torch.randint(0, 100, (2, 400), generator=torch.Generator().manual_seed(0))
    totals = {}
    for rp_edge_convs in (False, True):
        config = iexact.CompressionConfig(reference_inputs=False, rp_edge_convs=rp_edge_convs)
        totals[rp_edge_convs] = iexact.activation_memory(iexact.compress_(conv(), config), x, edge_index).total
    config = iexact.CompressionConfig()
    unprojected, projected = (iexact.codec.stored_bytes((100, 32), c) for c in (config.unprojected, config))
    assert totals[False] - totals[True] == unprojected - projected > 0


def test_a_linear_keeps_its_input_compressed_and_nothing_else():
    config = iexact.CompressionConfig(reference_inputs=False)
    linear = iexact.compress_(torch.nn.Linear(32, 8), config)
    x = torch.randn(100, 32)
    report = iexact.activation_memory(linear, x)
    assert report.total == report.compressed == iexact.compress(x, config).nbytes
