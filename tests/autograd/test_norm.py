"""Layer normalization: an unbiased input gradient from two independent copies;
one copy in both factors is biased, and the check sees it."""

import torch
import torch.nn.functional as F

from iexact import CompressionConfig
from iexact.autograd import CompressedLayerNormFunction, norm
from iexact.seeds import SeedStream

from .test_activation import _bias_statistic


def _draws(x, weight, grad, draws: int):
    samples = []
    for seed in range(draws):
        leaf = x.clone().requires_grad_()
        out = CompressedLayerNormFunction.apply(
            leaf, weight, None, (x.shape[-1],), 1e-5, CompressionConfig(), SeedStream(seed)
        )
        samples.append(torch.autograd.grad(out, (leaf, weight), grad))
    return [torch.stack(column).double() for column in zip(*samples, strict=True)]


def test_layer_norm_gradients_are_unbiased_and_one_copy_would_not_be(monkeypatch):
    """Rows of 8 features (the bias of one copy is Var / D: large for a small D)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=generator) * 3
    weight = (torch.rand(8, generator=generator) + 0.5).requires_grad_()
    grad = torch.randn(64, 8, generator=generator)
    leaf = x.clone().requires_grad_()
    exact_x, exact_w = torch.autograd.grad(F.layer_norm(leaf, (8,), weight, None, 1e-5), (leaf, weight), grad)
    dx, dw = _draws(x, weight, grad, 1000)
    assert _bias_statistic(dx, exact_x) < 3.5 and _bias_statistic(dw, exact_w) < 3.5
    assert torch.allclose(dx.sum(-1), torch.zeros(()).double(), atol=1e-4)  # each row's gradient sums to 0

    pack = norm.pack
    copies = {}

    def one_copy(tensor, config, seeds, argument=False):  # the second pack returns the first's codes
        if id(tensor) in copies:
            return copies.pop(id(tensor))
        copies[id(tensor)] = pack(tensor, config, seeds, argument)
        return copies[id(tensor)]

    monkeypatch.setattr(norm, "pack", one_copy)
    biased, _ = _draws(x, weight, grad, 1000)
    assert _bias_statistic(biased, exact_x) > 10
