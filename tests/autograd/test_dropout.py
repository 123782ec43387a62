"""Dropout's mask: torch's own, redrawn in backward from the generator snapshot."""

import pytest
import torch
import torch.nn.functional as F

from iexact.autograd import (
    DropoutFunction,
)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_regenerates_its_mask(p, device):
    x = torch.randn(200, 30, device=device, requires_grad=True)
    torch.manual_seed(1234)
    out = DropoutFunction.apply(x, p)
    kept = out != 0
    if 0 < p < 1:
        assert abs(kept.float().mean().item() - (1 - p)) < 0.02
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    expected = torch.zeros_like(x) if p == 1 else kept.float() / (1 - p)
    torch.testing.assert_close(grad, expected)
    torch.manual_seed(1234)
    assert torch.equal(DropoutFunction.apply(x, p), out)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropout_draws_torchs_own_mask(p, dtype):
    """Under one seed the mask, the output, the gradient and the generator's
    next state all equal torch's dropout: a converted model's masks are its FP32 twin's."""
    x = torch.randn(123, 17, dtype=dtype).t().requires_grad_()  # a transposed view: layout matters
    grad = torch.randn(17, 123, dtype=dtype)
    results = []
    for dropout in (lambda t: DropoutFunction.apply(t, p), lambda t: F.dropout(t, p, training=True)):
        torch.manual_seed(7)
        out = dropout(x)
        (dx,) = torch.autograd.grad(out, x, grad)
        results.append((out, dx, torch.rand(3)))
    for ours, theirs in zip(*results, strict=True):
        assert torch.equal(ours, theirs)
