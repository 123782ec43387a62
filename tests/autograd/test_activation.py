"""ReLU and LeakyReLU from their sign bits: exact gradients."""

import pytest
import torch
import torch.nn.functional as F

from iexact.autograd import (
    CompressedLeakyReLUFunction,
    CompressedReLUFunction,
)


@pytest.mark.parametrize("slope", [None, 0.2])
def test_relu_family_gradients_are_exact(slope, device):
    x = torch.randn(37, 11, device=device, requires_grad=True)
    grad = torch.randn(37, 11, device=device)
    if slope is None:
        ours, reference = CompressedReLUFunction.apply(x), F.relu(x)
    else:
        ours, reference = CompressedLeakyReLUFunction.apply(x, slope), F.leaky_relu(x, slope)
    assert torch.equal(ours, reference)
    (expected,) = torch.autograd.grad(reference, x, grad)
    (got,) = torch.autograd.grad(ours, x, grad)
    assert torch.equal(got, expected)
