"""ReLU and LeakyReLU from their sign bits: exact gradients; smooth activations and
PReLU from their compressed derivative or negative part: unbiased ones."""

import pytest
import torch
import torch.nn.functional as F

import iexact
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


def _gradient_draws(function, x, grad, draws):
    """``draws`` input gradients of ``function(x, seed)`` against ``grad``, stacked."""
    samples = []
    for seed in range(draws):
        leaf = x.clone().requires_grad_()
        (dx,) = torch.autograd.grad(function(leaf, seed), leaf, grad)
        samples.append(dx)
    return torch.stack(samples).double()


def _bias_statistic(samples, exact):
    r""":math:`\|\bar s - e\|^2` over the variance of the mean, summed: about 1 when unbiased."""
    deviation = samples.mean(0) - exact.double()
    return (deviation.square().sum() / (samples.var(0).sum() / samples.shape[0])).item()


SMOOTH = {
    "gelu": ("gelu", ("none",), lambda x: F.gelu(x)),
    "gelu tanh": ("gelu", ("tanh",), lambda x: F.gelu(x, approximate="tanh")),
    "silu": ("silu", (), F.silu),
    "mish": ("mish", (), F.mish),
    "tanh": ("tanh", (), torch.tanh),
    "sigmoid": ("sigmoid", (), torch.sigmoid),
    "softplus": ("softplus", (2.0, 5.0), lambda x: F.softplus(x, 2.0, 5.0)),
}


@pytest.mark.parametrize(
    "name", [name if name in ("gelu", "sigmoid") else pytest.param(name, marks=pytest.mark.slow) for name in SMOOTH]
)  # two in the default run, all with -m slow
def test_smooth_activations_give_torchs_values_and_unbiased_int2_gradients(name):
    """Over 1,000 seeds the INT2 gradient averages to torch's (the statistic is
    about 1 when unbiased); storing the compressed input and differentiating
    that instead fails the same check."""
    from iexact import CompressionConfig, decompress
    from iexact.autograd import CompressedSmoothFunction
    from iexact.seeds import SeedStream

    kind, params, reference = SMOOTH[name]
    config = CompressionConfig()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 2
    grad = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    leaf = x.clone().requires_grad_()
    (exact,) = torch.autograd.grad(reference(leaf), leaf, grad)
    assert torch.equal(CompressedSmoothFunction.apply(x, kind, params, config, None), reference(x))

    def ours(t, seed):
        return CompressedSmoothFunction.apply(t, kind, params, config, SeedStream(seed))

    def biased(t, seed):  # f'(x_hat) for a compressed x: the rounding passes through a non-linear f'
        rounded = decompress(iexact.compress(t.detach(), config.unprojected, seed=seed)).requires_grad_()
        (slope,) = torch.autograd.grad(reference(rounded), rounded, torch.ones_like(rounded))
        return reference(t).detach() + (t - t.detach()) * slope  # value f(x), gradient f'(x_hat) dy

    assert _bias_statistic(_gradient_draws(ours, x, grad, 1000), exact) < 3.5
    assert _bias_statistic(_gradient_draws(biased, x, grad, 1000), exact) > 20


def test_prelu_weight_gradient_is_unbiased_per_channel_and_its_input_gradient_exact():
    from iexact import CompressionConfig
    from iexact.autograd import CompressedPReLUFunction
    from iexact.seeds import SeedStream

    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    weight = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], requires_grad=True)
    leaf = x.clone().requires_grad_()
    exact_x, exact_w = torch.autograd.grad(F.prelu(leaf, weight), (leaf, weight), grad)
    samples = []
    for seed in range(1000):
        leaf = x.clone().requires_grad_()
        out = CompressedPReLUFunction.apply(leaf, weight, CompressionConfig(), SeedStream(seed))
        assert torch.equal(out, F.prelu(x, weight))
        dx, dw = torch.autograd.grad(out, (leaf, weight), grad)
        assert torch.equal(dx, exact_x)
        samples.append(dw)
    assert _bias_statistic(torch.stack(samples).double(), exact_w) < 3.5
