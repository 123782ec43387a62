"""The compressed Linear Function against the uncompressed product."""

import pytest
import torch
import torch.nn.functional as F

import iexact
from iexact import CompressionConfig
from iexact.autograd import (
    CompressedLinearFunction,
    EdgePairLinearFunction,
)
from tests.nn.bias import bias_statistic, threshold


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


def _edge_pair_inputs(bipartite: bool):
    generator = torch.Generator().manual_seed(3)
    num_src, num_dst = (40, 25) if bipartite else (40, 40)
    source = torch.randn(num_src, 6, generator=generator).requires_grad_()
    target = torch.randn(num_dst, 6, generator=generator).requires_grad_() if bipartite else source
    src, dst = (
        torch.randint(0, num_src, (300,), generator=generator),
        torch.randint(0, num_dst, (300,), generator=generator),
    )
    return source, target, src, dst, torch.nn.Linear(12, 5)


def _stock_edge_pair(source, target, src, dst, layer):
    x_i, x_j = target[dst], source[src]
    return layer(torch.cat([x_i, x_j - x_i], dim=-1))


@pytest.mark.parametrize("bipartite", [False, True])
def test_edge_pair_linear_is_pygs_message_bit_for_bit_with_the_exact_gradients_at_8_bits(bipartite):
    source, target, src, dst, layer = _edge_pair_inputs(bipartite)
    grad = torch.randn(300, 5, generator=torch.Generator().manual_seed(4))
    leaves = [source] if not bipartite else [source, target]
    expected = _stock_edge_pair(source, target, src, dst, layer)
    reference = torch.autograd.grad(expected, [*leaves, layer.weight, layer.bias], grad)
    config = CompressionConfig(bits=8, block_size=64, rp_ratio=1, reference_inputs=False)
    out = EdgePairLinearFunction.apply(
        source, target if bipartite else None, src, dst, layer.weight, layer.bias, config, None
    )
    assert torch.equal(out, expected)
    ours = torch.autograd.grad(out, [*leaves, layer.weight, layer.bias], grad)
    for a, b in zip(ours[:-2], reference[:-2], strict=True):
        torch.testing.assert_close(a, b)  # the input gradients need nothing kept
    torch.testing.assert_close(ours[-1], reference[-1])
    assert _cosine(ours[-2], reference[-2]) > 0.9999


def test_edge_pair_linear_keeps_the_node_features_once_and_its_int2_weight_gradient_is_unbiased():
    source, target, src, dst, layer = _edge_pair_inputs(bipartite=False)
    source = source.detach()
    config = CompressionConfig(rp_ratio=1, reference_inputs=False)  # compressed, not referenced
    out = EdgePairLinearFunction.apply(source, None, src, dst, layer.weight, layer.bias, config, None)
    held = {t.data_ptr() for t in (src, dst, layer.weight)}
    saved = [t for t in out.grad_fn.saved_tensors if t.data_ptr() not in held]
    assert sum(t.nbytes for t in saved) == iexact.codec.stored_bytes(tuple(source.shape), config)  # X once, no E x 2F
    grad = torch.randn(300, 5, generator=torch.Generator().manual_seed(4))
    exact = torch.autograd.grad(_stock_edge_pair(source, source, src, dst, layer), layer.weight, grad)[0]

    def draws(weight_gradient):
        return torch.stack([weight_gradient() for _ in range(1000)])

    def ours():
        out = EdgePairLinearFunction.apply(source, None, src, dst, layer.weight, None, config, None)
        return torch.autograd.grad(out, layer.weight, grad)[0]

    assert bias_statistic(draws(ours), exact) < threshold(exact.numel())
    # the check sees a bias of 20 % on one half of the gradient
    assert bias_statistic(draws(lambda: ours() * torch.tensor([1.2] * 6 + [1.0] * 6)), exact) > threshold(exact.numel())
