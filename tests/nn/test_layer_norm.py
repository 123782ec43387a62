"""``LayerNorm`` (torch's, PyG's per node): torch's values, the normalized input kept twice."""

import copy

import pytest
import torch
from torch_geometric.nn.norm import LayerNorm as PyGLayerNorm

import iexact
from iexact import CompressionConfig
from iexact.nn.fallback import FallbackHandler

from .examples import Example

EXAMPLES = [
    Example("LayerNorm", lambda channels: torch.nn.LayerNorm(channels), "x"),
    Example("LayerNorm without bias", lambda channels: torch.nn.LayerNorm(channels, bias=False), "x"),
    Example("PyG LayerNorm per node", lambda channels: PyGLayerNorm(channels, mode="node"), "x"),
]


@pytest.mark.parametrize(
    "build",
    [
        lambda: torch.nn.LayerNorm(16),
        lambda: torch.nn.LayerNorm(16, elementwise_affine=False),
        lambda: torch.nn.LayerNorm((3, 16)),
        lambda: PyGLayerNorm(16, mode="node"),
    ],
)
def test_layer_norm_values_are_torchs_in_training_and_eval(build):
    torch.manual_seed(0)
    norm = build()
    twin = copy.deepcopy(norm)
    iexact.compress_(norm, CompressionConfig())
    x = torch.randn(50, 3, 16) * 2 + 1
    for training in (True, False):
        norm.train(training), twin.train(training)
        assert torch.equal(norm(x), twin(x))
    report = iexact.activation_memory(norm.train(), x.requires_grad_())
    rows = 50 * 3 if isinstance(norm, PyGLayerNorm) or norm.normalized_shape == (16,) else 50
    packed = iexact.codec.stored_bytes((rows, 50 * 3 * 16 // rows), CompressionConfig().unprojected)
    assert (report.compressed, report.uncompressed) == (2 * packed, 4 * rows)  # 1/sigma per row exact


def test_pygs_graph_mode_runs_pygs_forward_under_the_fallback():
    norm = PyGLayerNorm(16)  # mode="graph": one normalization over the whole graph
    twin = copy.deepcopy(norm)
    with pytest.warns(UserWarning, match="saved-tensor fallback .*mode='graph'"):
        iexact.compress_(norm, CompressionConfig())
    assert isinstance(norm, FallbackHandler)
    x = torch.randn(50, 16)
    assert torch.equal(norm(x), twin(x))
