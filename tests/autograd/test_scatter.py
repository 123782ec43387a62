"""Scatter maximum and minimum keeping one bit per source element, with torch's gradient bit for bit."""

import pytest
import torch
from torch_geometric.nn import EdgeConv

import iexact
from iexact.autograd import ScatterExtremumFunction


@pytest.mark.parametrize("reduce", ["amax", "amin"])
@pytest.mark.parametrize("trial", range(3))
def test_values_and_gradients_are_torchs_bit_for_bit_with_ties(reduce, trial):
    generator = torch.Generator().manual_seed(trial)
    src = torch.randint(-3, 4, (300, 8), generator=generator).float().requires_grad_()  # many ties, and zeros
    index = torch.randint(0, 40, (300,), generator=generator).view(-1, 1).expand_as(src)
    grad = torch.randn(40, 8, generator=generator)
    stock = src.new_zeros(40, 8).scatter_reduce_(0, index, src, reduce, include_self=False)
    buffer = src.new_zeros(40, 8)
    ours = ScatterExtremumFunction.apply(buffer, 0, index, src, reduce)
    assert ours is buffer and torch.equal(ours, stock)  # in place, as scatter_reduce_ is
    assert torch.equal(torch.autograd.grad(ours, src, grad)[0], torch.autograd.grad(stock, src, grad)[0])


def test_a_max_aggregation_under_the_fallback_keeps_bits_where_torch_keeps_its_input_and_output():
    torch.manual_seed(0)
    conv = EdgeConv(torch.nn.Identity(), aggr="max")  # nothing but the max aggregation of x_j - x_i and x_i
    x = torch.randn(500, 64, requires_grad=True)
    edge_index = torch.randint(0, 500, (2, 4000), generator=torch.Generator().manual_seed(1))
    stock = iexact.activation_memory(conv, x, edge_index)
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*<model> \(EdgeConv, its nn does not begin with a"):
        iexact.compress_(conv, iexact.CompressionConfig())
    report = iexact.activation_memory(conv, x, edge_index)
    masks = 4000 * 128 // 8 + 500 * 128 // 8  # one bit per message element and per output element
    assert sum(saved.nbytes for saved in report.saved if saved.dtype == torch.uint8) == masks
    assert stock.total > 20 * report.total
