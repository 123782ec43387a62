"""Dropout's mask: torch's own, redrawn in backward from the generator snapshot
or read from its bits."""

import pytest
import torch
import torch.nn.functional as F

from iexact.autograd import (
    DropoutFunction,
)


@pytest.mark.parametrize("bits", [False, True], ids=["seed", "bits"])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_restores_its_mask(p, bits, device):
    x = torch.randn(200, 30, device=device, requires_grad=True)
    torch.manual_seed(1234)
    out = DropoutFunction.apply(x, p, bits)
    kept = out != 0
    if 0 < p < 1:
        assert abs(kept.float().mean().item() - (1 - p)) < 0.02
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    expected = torch.zeros_like(x) if p == 1 else kept.float() / (1 - p)
    torch.testing.assert_close(grad, expected)
    torch.manual_seed(1234)
    assert torch.equal(DropoutFunction.apply(x, p, bits), out)


@pytest.mark.parametrize("bits", [False, True], ids=["seed", "bits"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dropout_draws_torchs_own_mask(p, dtype, bits):
    """Under one seed the mask, the output, the gradient and the generator's
    next state all equal torch's dropout: a converted model's masks are its FP32 twin's."""
    x = torch.randn(123, 17, dtype=dtype).t().requires_grad_()  # a transposed view: layout matters
    grad = torch.randn(17, 123, dtype=dtype)
    results = []
    for dropout in (lambda t: DropoutFunction.apply(t, p, bits), lambda t: F.dropout(t, p, training=True)):
        torch.manual_seed(7)
        out = dropout(x)
        (dx,) = torch.autograd.grad(out, x, grad)
        results.append((out, dx, torch.rand(3)))
    for ours, theirs in zip(*results, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("bits", [False, True], ids=["seed", "bits"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_keeps_a_bit_per_element_or_the_snapshot(p, bits):
    x = torch.randn(1000, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        DropoutFunction.apply(x, p, bits)
    if p in (0.0, 1.0):
        assert saved == []  # no draw, nothing to restore
    elif bits:
        assert [(t.dtype, t.numel()) for t in saved] == [(torch.uint8, 64_000 // 8)]
    else:
        assert [t.numel() for t in saved] == [torch.get_rng_state().numel()]
