"""``EdgeConv``: its network's first linear map keeping the node features, the extremum kept as bits."""

import copy

import pytest
import torch
from torch_geometric.nn import MLP, DynamicEdgeConv, EdgeConv

import iexact
from iexact import CompressionConfig
from iexact.nn.edge_conv import after_first_linear
from iexact.nn.fallback import FallbackHandler

from .examples import Example
from .forms import F_IN, N, compare, edges, features
from .knn import knn_available


def _dynamic(channels: int, k: int = 4, **kwargs) -> DynamicEdgeConv:
    with knn_available():
        return DynamicEdgeConv(MLP([2 * channels, 8, 7]), k=k, **kwargs)


EXAMPLES = [
    Example("EdgeConv MLP max", lambda channels: EdgeConv(MLP([2 * channels, 8, 7]))),
    Example(
        "EdgeConv Sequential mean",
        lambda channels: EdgeConv(
            torch.nn.Sequential(torch.nn.Linear(2 * channels, 8), torch.nn.Tanh(), torch.nn.Linear(8, 7)), aggr="mean"
        ),
    ),
    Example("EdgeConv single-layer MLP add", lambda channels: EdgeConv(MLP([2 * channels, 7]), aggr="add")),
    Example("DynamicEdgeConv MLP max", _dynamic, inputs="x"),
]


def _messages_and_nodes(conv, x, edge_index):
    """The activation memory of ``conv`` converted at the default, and of the E x 2F message it never makes."""
    converted = iexact.compress_(conv, CompressionConfig())
    report = iexact.activation_memory(converted, x, edge_index)
    message = torch.empty(edge_index.shape[1], 2 * x.shape[1])
    return report, iexact.codec.stored_bytes(tuple(message.shape), CompressionConfig())


def test_keeps_the_node_features_once_instead_of_the_edge_messages():
    """The first map keeps X (N x F, unprojected: the conv's per-edge tensors are
    most of what it keeps), never the E x 2F concatenation PyG's message makes;
    a one-layer MLP then keeps only the max's bits (one per message element and
    per output element)."""
    x, edge_index = features(100, 16) * 1.0, edges(100, 100, count=800)
    report, _ = _messages_and_nodes(EdgeConv(MLP([32, 12])), x, edge_index)
    node_bytes = iexact.codec.stored_bytes((100, 16), CompressionConfig().unprojected)
    extremum_bits = -(-800 * 12 // 8) + -(-100 * 12 // 8)
    assert report.total == report.compressed == node_bytes + extremum_bits
    projected = iexact.activation_memory(
        iexact.compress_(EdgeConv(MLP([32, 12])), CompressionConfig(rp_edge_convs=True)), x, edge_index
    )
    assert projected.total == iexact.codec.stored_bytes((100, 16), CompressionConfig()) + extremum_bits


@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_bipartite_pairs_and_both_flows(bipartite, flow):
    num_src, num_dst = (12, 5) if bipartite else (N, N)
    edge_index = edges(num_src, num_dst) if flow == "source_to_target" else edges(num_src, num_dst).flip(0)
    x = (features(num_src, F_IN), features(num_dst, F_IN, seed=3)) if bipartite else (features(N, F_IN), None)
    out = compare(
        lambda: EdgeConv(MLP([2 * F_IN, 8, 7]), flow=flow),
        lambda conv, source, target: conv(source if target is None else (source, target), edge_index),
        list(x),
    )
    assert out.shape == (num_dst if flow == "source_to_target" else num_src, 7)


@pytest.mark.parametrize(
    "mlp",
    [
        lambda: MLP([2 * F_IN, 8, 8, 7], act_first=True, norm="layer_norm", dropout=0.3),
        lambda: MLP([2 * F_IN, 8, 7], plain_last=False, norm="batch_norm", act="gelu"),
        lambda: MLP([2 * F_IN, 8, 7], norm="graph_norm"),
    ],
    ids=["act_first, LayerNorm, dropout", "not plain_last, BatchNorm, GELU", "GraphNorm (takes a batch)"],
)
def test_every_mlp_setting_computes_what_pyg_computes(mlp):
    """The rest of the MLP after its first map (activation first or not, norms,
    dropout drawing the same masks, plain last layer or not) as PyG's forward."""
    compare(lambda: EdgeConv(mlp()), lambda conv, x: conv(x, edges()), [features(N, F_IN)])


def test_after_first_linear_is_the_mlp_without_its_first_map():
    mlp = MLP([6, 8, 8, 3], norm="batch_norm", dropout=0.0).eval()
    x = torch.randn(10, 6)
    torch.testing.assert_close(after_first_linear(mlp, mlp.lins[0](x)), mlp(x))


def test_a_network_not_beginning_with_a_linear_map_takes_the_fallback_and_is_named():
    nn = torch.nn.Sequential(torch.nn.LayerNorm(2 * F_IN), torch.nn.Linear(2 * F_IN, 7))
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*EdgeConv, its nn does not begin with a linear"):
        conv = iexact.compress_(EdgeConv(nn), CompressionConfig())
    assert isinstance(conv, FallbackHandler)


def test_a_softmax_aggregation_takes_the_fallback_and_is_named():
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*EdgeConv, aggr='softmax'"):
        conv = iexact.compress_(EdgeConv(MLP([2 * F_IN, 7]), aggr="softmax"), CompressionConfig())
    assert isinstance(conv, FallbackHandler)


def test_forward_hooks_on_its_network_run_the_stock_forward_with_a_warning():
    seen = []

    def build():
        conv = EdgeConv(MLP([2 * F_IN, 8, 7]))
        conv.nn.lins[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
        return conv

    warns = "forward hooks are registered on its nn"
    compare(build, lambda conv, x: conv(x, edges()), [features(N, F_IN)], warns=warns)
    assert seen == [(60, 2 * F_IN)] * 2  # the converted conv and its twin both ran the hooked map on the messages


def test_a_static_graph_batch_runs_the_stock_forward_with_a_warning():
    compare(
        lambda: EdgeConv(MLP([2 * F_IN, 7])),
        lambda conv, x: conv(x, edges()),
        [features(3, N, F_IN)],
        warns="x is not a matrix or a pair of matrices",
    )


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16 autocast"])
@pytest.mark.parametrize("aggr", ["max", "add"])
def test_outputs_are_the_stock_convs_bit_for_bit_in_training(aggr, autocast):
    """The messages are made as PyG makes them, so nothing differs by rounding
    (under bf16 autocast a different rounding would move the max's ties)."""
    nn = torch.nn.Sequential(torch.nn.Linear(2 * F_IN, 8), torch.nn.ReLU(), torch.nn.Linear(8, 7))
    conv = EdgeConv(nn, aggr=aggr)
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x, edge_index = features(N, F_IN), edges()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert torch.equal(conv(x, edge_index), twin(x, edge_index))


def test_dynamic_edge_conv_keeps_the_node_features_not_its_knn_messages():
    x = features(100, 16) * 1.0
    conv = iexact.compress_(_dynamic(16, k=8), CompressionConfig())
    fp32 = iexact.activation_memory(_dynamic(16, k=8), x)
    report = iexact.activation_memory(conv, x)
    assert report.uncompressed == 2 * 800 * 8 + 8 * 4  # the (2, kN) int64 graph it builds; the norm's statistics
    # the features once (never the kN x 2F messages), the first norm's input, one bit per ReLU and per extremum
    assert report.compressed < 6 * iexact.codec.stored_bytes((800, 8), CompressionConfig().unprojected)
    assert fp32.total > 10 * report.total


@pytest.mark.parametrize("form", ["batch", "bipartite batches"])
def test_dynamic_edge_conv_batches_and_pairs(form):
    batch = torch.arange(N) * 3 // N  # three graphs
    if form == "batch":
        compare(lambda: _dynamic(F_IN), lambda conv, x: conv(x, batch), [features(N, F_IN)])
    else:
        targets = torch.arange(12) * 3 // 12
        run = lambda conv, x, y: conv((x, y), (batch, targets))  # noqa: E731
        out = compare(lambda: _dynamic(F_IN), run, [features(N, F_IN), features(12, F_IN, seed=3)])
        assert out.shape == (12, 7)


def test_dynamic_edge_conv_with_forward_hooks_on_its_network_runs_the_stock_forward():
    def build():
        conv = _dynamic(F_IN)
        conv.nn.lins[0].register_forward_hook(lambda module, args, out: None)
        return conv

    compare(build, lambda conv, x: conv(x), [features(N, F_IN)], warns="forward hooks are registered on its nn")
