"""``ChebConv``: its input once, compressed, for all K weight gradients; the Laplacian as PyG builds it."""

import dataclasses

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import ChebConv

import iexact
from iexact.graph import LaplacianSpec, scaled_laplacian

from .examples import Example
from .forms import EIGHT_BITS, F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("ChebConv", lambda channels: ChebConv(channels, 7, K=3), graphs=("edge_index", "EdgeIndex")),
    Example("ChebConv K=1 rw", lambda channels: ChebConv(channels, 7, K=1, normalization="rw"), graphs=("edge_index",)),
]


def _with_loops_and_weights():
    edge_index = edges(count=80)
    edge_index[:, :4] = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])  # self-loops, which the Laplacian leaves out
    return edge_index, torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("normalization", [None, "sym", "rw"])
@pytest.mark.parametrize("lambda_max", [None, 3.0, "tensor"])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_scaled_laplacian_is_pygs(normalization, lambda_max, weighted):
    edge_index, weight = _with_loops_and_weights()
    weight = weight if weighted else None
    given = torch.tensor([3.0]) if lambda_max == "tensor" else lambda_max
    conv = ChebConv(F_IN, F_OUT, K=2, normalization=normalization)
    index, values = conv.__norm__(edge_index, N, weight, normalization, given, dtype=torch.float32)
    x = torch.randn(N, 4)
    expected = torch.zeros(N, 4).index_add_(0, index[1], x[index[0]] * values[:, None])
    number = lambda_max if isinstance(lambda_max, float) else None
    spec = LaplacianSpec(N, normalization, lambda_max=number)
    laplacian, diagonal = scaled_laplacian(edge_index, weight, given if number is None else None, spec, torch.float32)
    ours = diagonal[:, None] * x + torch.zeros(N, 4).index_add_(
        0, laplacian.dst, x[laplacian.src] * laplacian.weight[:, None]
    )
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("normalization", [None, "sym", "rw"])
@pytest.mark.parametrize(
    "arguments",
    ["none", "edge weights", "lambda_max number", "lambda_max tensor", "batch", "EdgeIndex", "target_to_source"],
)
def test_chebconv_inputs(normalization, arguments):
    edge_index, weight = _with_loops_and_weights()
    kwargs = {
        "none": {},
        "edge weights": {"edge_weight": weight},
        "lambda_max number": {"lambda_max": 2.5},
        "lambda_max tensor": {"lambda_max": torch.tensor(2.5)},
        "batch": {"batch": torch.zeros(N, dtype=torch.long), "lambda_max": torch.tensor([2.5])},
        "EdgeIndex": {},
        "target_to_source": {},
    }[arguments]
    graph = EdgeIndex(edge_index, sparse_size=(N, N)) if arguments == "EdgeIndex" else edge_index

    def build():
        conv = ChebConv(F_IN, F_OUT, K=3, normalization=normalization)
        conv.flow = "target_to_source" if arguments == "target_to_source" else conv.flow
        return conv

    compare(build, lambda conv, x: conv(x, graph, **kwargs), [features(N, F_IN)])


def test_per_graph_lambda_max_and_weights_needing_a_gradient_run_the_stock_forward():
    edge_index, weight = _with_loops_and_weights()
    batch = (torch.arange(N) >= N // 2).long()
    compare(
        lambda: ChebConv(F_IN, F_OUT, K=3),
        lambda conv, x: conv(x, edge_index, batch=batch, lambda_max=torch.tensor([2.0, 3.0])),
        [features(N, F_IN)],
        warns="lambda_max holds one value per graph",
    )
    compare(
        lambda: ChebConv(F_IN, F_OUT, K=3),
        lambda conv, x, w: conv(x, edge_index, w),
        [features(N, F_IN), weight.clone().requires_grad_()],
        warns="the edge weights need a gradient",
    )


def test_chebconv_keeps_its_input_once():
    conv = iexact.compress_(ChebConv(F_IN, F_OUT, K=4), dataclasses.replace(EIGHT_BITS, reference_inputs=False))
    report = iexact.activation_memory(conv, torch.randn(N, F_IN), edges())
    assert report.uncompressed == 0
    assert [row.nbytes for row in report.saved if row.dtype == torch.uint8] == [N * F_IN]
