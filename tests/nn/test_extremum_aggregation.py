"""``MaxAggregation`` and ``MinAggregation``: one bit per element, torch's gradient exactly."""

import copy

import pytest
import torch
from torch_geometric.nn.aggr import MaxAggregation, MinAggregation

import iexact
from iexact import CompressionConfig

from .examples import Example
from .forms import features

EXAMPLES = [
    Example("MaxAggregation", lambda channels: MaxAggregation(), inputs="index", unbiased=False),
    Example("MinAggregation", lambda channels: MinAggregation(), inputs="index", unbiased=False),
]


@pytest.mark.parametrize("aggregation", [MaxAggregation, MinAggregation])
@pytest.mark.parametrize("dim", [0, 1, -2])
def test_outputs_and_gradients_are_the_stock_modules_bit_for_bit_with_ties_and_empty_groups(aggregation, dim):
    x = features(3, 9, 4).movedim(1, dim).detach()
    x = x.index_fill(dim, torch.tensor([6, 7, 8]), 0.5).requires_grad_()  # group 4: three equal elements
    index = torch.tensor([0, 0, 1, 2, 2, 2, 4, 4, 4])  # group 3 empty
    module = aggregation()
    twin = copy.deepcopy(module)
    iexact.compress_(module, CompressionConfig())
    results = []
    for layer in (module, twin):
        leaf = x.detach().clone().requires_grad_()
        out = layer(leaf, index, dim_size=5, dim=dim)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
        results.append((out, leaf.grad))
    (out, grad), (expected, expected_grad) = results
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)


def test_keeps_one_bit_per_element_and_per_output_element():
    x, index = torch.randn(1000, 16, requires_grad=True) * 1.0, torch.arange(1000).remainder_(100)
    module = iexact.compress_(MaxAggregation(), CompressionConfig())
    report = iexact.activation_memory(module, x, index, dim_size=100)
    assert report.total == report.compressed == 1000 * 16 // 8 + 100 * 16 // 8
