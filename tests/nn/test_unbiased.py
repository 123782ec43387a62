r"""At INT2, every converted layer's gradients average to the exact ones.

The check is a bias statistic over K = 256 independent compressions: with
:math:`m` the mean draw, :math:`v` the per-element sample variance and
:math:`e` the FP32 gradient,

.. math::
    T = \frac{\lVert m - e \rVert^2}{\sum v / K},

which is about 1 for an unbiased estimator (:math:`\chi^2_n / n`) and
:math:`1 + K \lVert b \rVert^2 / \sum v` with a bias :math:`b`. The
thresholds (3.5 for tensors of 8 or more elements, 15 for smaller ones) are
exceeded by chance with probability below 1e-3, and are exceeded by the
estimator that multiplies one decompressed tensor by itself (the mistake
GAT's attention gradient once made), which
:func:`test_the_check_catches_a_squared_decompression` shows at the same K.

Graphs have ROWS = 1000 nodes: batch normalization's input gradient keeps a
documented O(1/N) bias (the i = j term of a sum of products, see
:class:`iexact.autograd.CompressedBatchNormFunction`), invisible at this N
as on any real graph; an O(1) bias such as the squared decompression is
visible at any N.
"""

import copy

import pytest
import torch
from torch_geometric.nn import MLP

import iexact
from iexact import CompressionConfig

from .test_layers import FEATURES, LAYERS, _run

INT2 = CompressionConfig(reference_inputs=False)  # inputs compressed, not referenced
DRAWS = 256
ROWS = 1000


def _graph() -> torch.Tensor:
    return torch.randint(0, ROWS, (2, 5 * ROWS), generator=torch.Generator().manual_seed(0))


def _bias_statistic(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """:math:`T` of ``samples`` (K draws stacked on dim 0) against ``exact``."""
    samples = samples.double().flatten(1)
    deviation = samples.mean(0) - exact.double().flatten()
    noise = samples.var(0).sum() / samples.shape[0]
    return (deviation.square().sum() / noise).item()


def _threshold(numel: int) -> float:
    return 3.5 if numel >= 8 else 15.0


def test_the_check_catches_a_squared_decompression():
    """Products of one INT2 decompression with itself are biased
    (E[x_hat^2] = x^2 + Var): the check must fail them and pass two independent copies."""
    x = torch.randn(ROWS, FEATURES)
    config = CompressionConfig(rp_ratio=1)
    seeds = iter(range(10**6))

    def decompressed():
        return iexact.decompress(iexact.compress(x, config, seed=next(seeds)))

    squared = torch.stack([decompressed().square() for _ in range(DRAWS)])
    independent = torch.stack([decompressed() * decompressed() for _ in range(DRAWS)])
    assert _bias_statistic(squared, x * x) > _threshold(x.numel()) > _bias_statistic(independent, x * x)


UNBIASED_LAYERS = sorted(set(LAYERS) - {"ReLU", "LeakyReLU"}) + ["GINConv mlp"]  # ReLU's gradient is exact


@pytest.mark.parametrize("name", UNBIASED_LAYERS)
def test_int2_gradients_average_to_the_exact_ones(name):
    """Each parameter and input gradient separately (an attention vector's bias
    would drown in the weight matrix's gradient if they were pooled)."""
    factory, kind = LAYERS[name] if name in LAYERS else (lambda: MLP([FEATURES, 16, 16, 7], norm=None, act="elu"), "x")
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
    for _ in range(DRAWS):
        x.grad = None
        module.zero_grad()
        _run(module, inputs, grad_seed=1)
        draws.append([x.grad] + [p.grad for p in module.parameters()])
    checked = 0
    largest = max(reference.norm() for reference in exact)
    for index, reference in enumerate(exact):
        if reference.norm() < 1e-4 * largest:
            continue  # a gradient that is zero up to rounding (a bias before batch norm)
        samples = torch.stack([draw[index] for draw in draws])
        if samples.var(0).sum() < 1e-12 * reference.square().sum():
            torch.testing.assert_close(samples[0], reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
            continue  # kept exactly: no noise, no bias
        statistic = _bias_statistic(samples, reference)
        assert statistic < _threshold(reference.numel()), (index, tuple(reference.shape), statistic)
        checked += 1
    assert checked >= 1
