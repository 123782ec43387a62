"""An activation that leaves its derivative to the dropout after it: torch's
values and gradients bit for bit, keeping the snapshot and the signs of kept
elements, or bits."""

import pytest
import torch
import torch.nn.functional as F

from iexact.autograd import ActivationDerivativeFunction, ActivationDropoutFunction, DeferredActivationFunction
from iexact.autograd.activation_dropout import _zero_where_not, claim
from iexact.quant import selected_capacity

SLOPES = {"relu": 0.0, "leaky_relu": 0.2, "leaky_relu 0.01": 0.01}


def _fused(x: torch.Tensor, p: float, slope: float, bits: bool = False) -> torch.Tensor:
    h = DeferredActivationFunction.apply(x, slope)
    assert claim(h) == slope
    return ActivationDropoutFunction.apply(h, p, slope, bits)


def _stock(x: torch.Tensor, p: float, slope: float) -> torch.Tensor:
    h = F.relu(x) if slope == 0 else F.leaky_relu(x, slope)
    return F.dropout(h, p, training=True)


@pytest.mark.parametrize("bits", [False, True], ids=["seed", "bits"])
@pytest.mark.parametrize("activation", SLOPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_fused_activation_and_dropout_are_torchs_bit_for_bit(activation, p, bits, device, monkeypatch):
    """Output, input gradient and the generator's next draw equal torch's
    activation then dropout under one seed (the input has exact zeros too),
    the signs packed and read 1,000 elements at a time."""
    from iexact.quant import bitmask

    monkeypatch.setattr(bitmask, "SELECT_CHUNK", 1000)
    slope = SLOPES[activation]
    x = torch.randn(301, 33, device=device)
    x[::7, ::5] = 0
    grad = torch.randn_like(x)
    results = []
    for run in (lambda *args: _fused(*args, bits=bits), _stock):
        leaf = x.clone().requires_grad_()
        torch.manual_seed(11)
        out = run(leaf, p, slope)
        (dx,) = torch.autograd.grad(out, leaf, grad)
        results.append((out, dx, torch.rand(2, device=device)))
    for fused, stock in zip(*results, strict=True):
        assert torch.equal(fused, stock)


@pytest.mark.parametrize(
    ("slope", "expected"), [(0.0, [64_000 // 8]), (0.2, [64_000 // 8, selected_capacity(64_000, 0.5) // 8])]
)
def test_fused_dropout_with_bits_keeps_one_bit_per_element_after_a_relu(slope, expected):
    """After a ReLU the one bit "kept and positive"; after a LeakyReLU the mask's bits and the kept signs."""
    x = torch.randn(1000, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _fused(x, 0.5, slope, bits=True)
    assert [t.numel() for t in saved] == expected and all(t.dtype == torch.uint8 for t in saved)


def test_fused_dropout_keeps_the_snapshot_and_the_kept_signs_only():
    x = torch.randn(1000, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _fused(x, 0.5, 0.0)
    snapshot, signs = saved
    assert snapshot.numel() == torch.get_rng_state().numel()
    assert signs.dtype == torch.uint8 and signs.numel() * 8 == selected_capacity(64_000, 0.5)
    assert signs.numel() < 0.53 * 64_000 / 8  # half a bit per element, where ReLU alone keeps one


@pytest.mark.parametrize("activation", SLOPES)
def test_a_claimed_activation_without_a_drop_keeps_every_sign(activation):
    slope = SLOPES[activation]
    x = torch.randn(50, 8, requires_grad=True)
    h = DeferredActivationFunction.apply(x, slope)
    assert claim(h) == slope and claim(h) is None  # claimed once
    out = ActivationDerivativeFunction.apply(h, slope)
    grad = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, x, grad)
    expected_x = x.detach().clone().requires_grad_()
    stock = F.relu(expected_x) if slope == 0 else F.leaky_relu(expected_x, slope)
    assert torch.equal(out, stock) and torch.equal(dx, torch.autograd.grad(stock, expected_x, grad)[0])


def test_an_unclaimed_deferred_activation_is_refused_in_backward():
    x = torch.randn(10, requires_grad=True)
    h = DeferredActivationFunction.apply(x, 0.0)
    with pytest.raises(RuntimeError, match="without passing that dropout"):
        (h * 2).sum().backward()
    assert claim(torch.randn(3, requires_grad=True).relu()) is None  # no deferred activation: nothing claimed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_zeroing_by_bits_is_masked_fill(dtype, contiguous):
    values = torch.randn(40, 25).to(dtype)
    values[0, :4] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0]).to(dtype)
    keep = torch.rand(40, 25) < 0.5
    keep[0, :4] = False
    if not contiguous:
        values, keep = values.t(), keep.t()
    expected = values.clone().masked_fill_(~keep, 0.0)
    got = _zero_where_not(values, keep)
    assert got is values and torch.equal(got, expected)
    assert not torch.signbit(got[~keep]).any()  # +0, as masked_fill_ writes
