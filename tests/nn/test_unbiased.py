"""At INT2, every converted layer's gradients average to the exact ones.

The check: over K independent compressions the mean gradient's relative
error against FP32 must fall like 1/sqrt(K). From 16 to 256 draws an unbiased
estimator's error shrinks to 1/4; a bias b stalls it at b. The threshold
(0.45) is met by the unbiased layers and failed by the estimator that
multiplies one decompressed tensor by itself (the mistake GAT's attention
gradient once made), which :func:`test_the_check_catches_a_squared_decompression`
shows at the same number of draws.

Graphs have ROWS = 1000 nodes: batch normalization's input gradient keeps a
documented O(1/N) bias (the i = j term of a sum of products, see
:class:`iexact.autograd.CompressedBatchNormFunction`), which on 50 nodes
the check sees and on 1000 (or any real graph) it does not; an O(1) bias
such as the squared decompression fails at any N.
"""
import copy

import pytest
import torch
from torch_geometric.nn import MLP

import iexact
from iexact import CompressionConfig

from .test_layers import FEATURES, LAYERS, _run

INT2 = CompressionConfig(reference_inputs=False)  # inputs compressed, not referenced
FEW, MANY = 16, 256
STALL = 0.45  # unbiased: error(MANY) / error(FEW) ~ 0.25
ROWS = 1000


def _graph() -> torch.Tensor:
    return torch.randint(0, ROWS, (2, 5 * ROWS), generator=torch.Generator().manual_seed(0))


def _error_ratio(draw, exact: torch.Tensor) -> tuple[float, float]:
    """``(error at MANY, error(MANY) / error(FEW))`` of the running mean of ``draw()``."""
    total, errors = torch.zeros_like(exact), {}
    for k in range(1, MANY + 1):
        total += draw()
        if k in (FEW, MANY):
            errors[k] = ((total / k - exact).norm() / exact.norm()).item()
    return errors[MANY], errors[MANY] / errors[FEW]


def test_the_check_catches_a_squared_decompression():
    """d(x^2)/dx-like products of one INT2 decompression with itself are biased
    (E[x_hat^2] = x^2 + Var): the check must fail them and pass two independent copies."""
    x = torch.randn(ROWS, FEATURES)
    config = CompressionConfig(rp_ratio=1)
    seeds = iter(range(10**6))

    def decompressed():
        return iexact.decompress(iexact.compress(x, config, seed=next(seeds)))

    def squared():
        x_hat = decompressed()
        return x_hat * x_hat

    def independent():
        return decompressed() * decompressed()

    _, biased = _error_ratio(squared, x * x)
    _, unbiased = _error_ratio(independent, x * x)
    assert biased > STALL > unbiased


UNBIASED_LAYERS = sorted(set(LAYERS) - {"ReLU", "LeakyReLU"}) + ["GINConv mlp"]  # ReLU's gradient is exact


@pytest.mark.parametrize("name", UNBIASED_LAYERS)
def test_int2_gradients_average_to_the_exact_ones(name):
    """Each parameter and input gradient separately (an attention vector's bias
    would drown in the weight matrix's gradient if they were pooled)."""
    factory, kind = LAYERS[name] if name in LAYERS else (
        lambda: MLP([FEATURES, 16, 16, 7], norm=None, act="elu"), "x")
    torch.manual_seed(0)
    module = factory()
    twin = copy.deepcopy(module)
    iexact.compress_(module, INT2)
    x = torch.randn(ROWS, FEATURES)
    inputs = [x.requires_grad_()]
    if kind == "graph2":
        inputs.append(torch.randn(ROWS, FEATURES, generator=torch.Generator().manual_seed(5)))
    if kind != "x":
        inputs.append(_graph())
    _run(twin, inputs, grad_seed=1)
    exact = [x.grad.clone()] + [p.grad.clone() for p in twin.parameters()]
    draws = []

    def draw():
        x.grad = None
        module.zero_grad()
        _run(module, inputs, grad_seed=1)
        draws.append([x.grad] + [p.grad for p in module.parameters()])
        return torch.zeros(1)

    _error_ratio(draw, torch.ones(1))
    checked = 0
    for index, reference in enumerate(exact):
        if reference.norm() < 1e-4 * max(e.norm() for e in exact):
            continue  # a gradient that is (near) zero, e.g. a bias before batch norm
        samples = iter(d[index] for d in draws)
        error, ratio = _error_ratio(lambda: next(samples), reference)
        assert error < 1e-5 or ratio < STALL, (index, tuple(reference.shape), error, ratio)
        checked += 1
    assert checked >= 1
