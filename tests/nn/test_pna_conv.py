"""``PNAConv``: its towers' first maps keep the node features once, PyG's forward op for op."""

import copy
import warnings

import pytest
import torch
from torch_geometric.nn import PNAConv
from torch_geometric.nn.models import PNA

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed

from .examples import Example
from .forms import F_IN, N, WithEdgeFeatures, compiles_as_eager, edges, features

DEGREE = torch.tensor([2, 5, 8, 4, 1])  # a histogram of in-degrees 0..4


def _pna(channels: int, out: int = 6, **options) -> PNAConv:
    options.setdefault("aggregators", ["mean", "max", "std"])
    options.setdefault("scalers", ["identity", "amplification"])
    return PNAConv(channels, out, deg=DEGREE, **options)


EXAMPLES = [
    Example("PNAConv mean/max/std", lambda channels: _pna(channels)),
    # (var beside an exact aggregation is left to the example above: under bf16 autocast the message gradient
    # rounds the sum of an exact and a noisy part to bf16, and over 512 draws the mean lands 0.01 from the
    # one rounded twin where both are 0.25 from float32: the autocast check would measure bf16 rounding)
    Example(
        "PNAConv min/sum, two towers, two-layer networks",
        lambda channels: _pna(
            channels,
            aggregators=["min", "sum"],
            scalers=["attenuation", "linear"],
            towers=2,
            pre_layers=2,
            post_layers=2,
        ),
    ),
    Example(
        "PNAConv edge_dim, divided input",
        lambda channels: WithEdgeFeatures(_pna(channels, towers=2, divide_input=True, edge_dim=3), 3),  # channels even
        graphs=("edge_index", "EdgeIndex"),
    ),
]


def test_keeps_the_node_features_once_not_the_towers_concatenated_messages():
    x, edge_index = features(100, 8) * 1.0, edges(100, 100, count=800)  # x an activation, not the caller's
    config = CompressionConfig()
    conv = iexact.compress_(_pna(8, 8, aggregators=["sum"], scalers=["identity"], towers=4), config)
    layers = {layer.name: layer for layer in iexact.activation_memory(conv, x, edge_index).layers}
    assert (layers["(model)"].compressed, layers["(model)"].uncompressed) == (
        iexact.codec.stored_bytes((100, 8), config.edge_conv_inputs),  # once for the four towers
        0,
    )


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16 autocast"])
@pytest.mark.parametrize("divided", [False, True])
def test_outputs_are_the_stock_convs_bit_for_bit_in_training(divided, autocast):
    conv = _pna(F_IN, edge_dim=3, towers=2, divide_input=divided, pre_layers=2)
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x, edge_index = features(N, F_IN), edges()
    edge_attr = torch.randn(edge_index.shape[1], 3)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert torch.equal(conv(x, edge_index, edge_attr), twin(x, edge_index, edge_attr))


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"train_norm": True}, "train_norm=True"),
        ({"aggregators": ["mean", "median"]}, "no handler for its MedianAggregation"),
    ],
)
def test_what_it_does_not_compress_takes_the_fallback_named(options, reason):
    with pytest.warns(UserWarning, match=rf"saved-tensor fallback .*<model> \(PNAConv, {reason}"):
        iexact.compress_(_pna(F_IN, **options), CompressionConfig())


def test_edge_features_without_edge_dim_take_the_stock_forward():
    conv = iexact.compress_(_pna(F_IN), CompressionConfig())
    with pytest.warns(UserWarning, match="edge_attr is given without edge_dim"), pytest.raises(AttributeError):
        conv(features(N, F_IN), edges(), torch.randn(60, 3))


def test_pygs_pna_model_is_compressed_whole_and_compiles_without_graph_breaks():
    model = PNA(F_IN, 8, 2, 3, aggregators=["mean", "max", "std"], scalers=["identity", "amplification"], deg=DEGREE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no module left to the fallback
        iexact.compress_(model, CompressionConfig())
    x, edge_index = features(N, F_IN), edges()
    compiles_as_eager(model, x, edge_index)
    assert all(is_compressed(conv) for conv in model.convs)
