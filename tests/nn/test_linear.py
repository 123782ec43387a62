"""``torch.nn.Linear`` and PyG's ``Linear``: the input compressed."""

import torch
from torch_geometric.nn.dense.linear import Linear as PyGLinear

import iexact

from .examples import Example

EXAMPLES = [
    Example("Linear", lambda channels: torch.nn.Linear(channels, 7), "x"),
    Example("PyG Linear", lambda channels: PyGLinear(channels, 7), "x"),
]


def test_a_linear_keeps_its_input_compressed_and_nothing_else():
    config = iexact.CompressionConfig(reference_inputs=False)
    linear = iexact.compress_(torch.nn.Linear(32, 8), config)
    x = torch.randn(100, 32)
    report = iexact.activation_memory(linear, x)
    assert report.total == report.compressed == iexact.compress(x, config).nbytes
