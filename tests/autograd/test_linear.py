"""The compressed Linear Function against the uncompressed product."""

import torch
import torch.nn.functional as F

from iexact import CompressionConfig
from iexact.autograd import (
    CompressedLinearFunction,
)


def _cosine(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def test_linear_at_8_bits_matches_uncompressed(device):
    torch.manual_seed(0)
    x = torch.randn(300, 64, device=device, requires_grad=True)
    layer = torch.nn.Linear(64, 32).to(device)
    grad = torch.randn(300, 32, device=device)
    F.linear(x, layer.weight, layer.bias).backward(grad)
    reference = [t.grad.clone() for t in (x, layer.weight, layer.bias)]
    for t in (x, layer.weight, layer.bias):
        t.grad = None
    config = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
    out = CompressedLinearFunction.apply(x, layer.weight, layer.bias, config, None)
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias))
    out.backward(grad)
    torch.testing.assert_close(x.grad, reference[0])  # dX needs no saved activation
    torch.testing.assert_close(layer.bias.grad, reference[2])
    assert _cosine(layer.weight.grad, reference[1]) >= 0.999


def test_linear_int2_projected_weight_gradient_averages_to_exact():
    torch.manual_seed(1)
    x = torch.randn(500, 128)
    weight = torch.randn(16, 128, requires_grad=True)
    grad = torch.randn(500, 16)
    exact = grad.t() @ x
    config = CompressionConfig.iexact()
    errors = {}
    total = torch.zeros_like(exact)
    for draw in range(1, 257):
        weight.grad = None
        CompressedLinearFunction.apply(x, weight, None, config, None).backward(grad)
        total += weight.grad
        if draw in (4, 16, 64, 256):
            errors[draw] = ((total / draw - exact).norm() / exact.norm()).item()
    # relative error falls like 1 / sqrt(K): 4x the draws, about half the error
    for fewer, more in ((4, 16), (16, 64), (64, 256)):
        assert 0.3 < errors[more] / errors[fewer] < 0.75
    assert errors[256] < 0.25


def test_linear_keeps_nothing_when_weight_is_frozen():
    weight = torch.randn(4, 8)  # no grad
    x = torch.randn(10, 8, requires_grad=True)
    out = CompressedLinearFunction.apply(x, weight, None, CompressionConfig(), None)
    assert [t is weight for t in out.grad_fn.saved_tensors] == [True]  # the weight only
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(10, 4) @ weight)
