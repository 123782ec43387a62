"""Message normalization: PyG's values, an unbiased gradient from two copies of the unit messages (one is biased)."""

import torch
from torch_geometric.nn.norm import MessageNorm

from iexact import CompressionConfig
from iexact.autograd import MessageNormFunction, message_norm
from iexact.seeds import SeedStream
from tests.nn.bias import bias_statistic, threshold

ROWS, WIDTH = 64, 6  # short rows: one copy's bias, Var / |M| per element, is large


def _inputs():
    generator = torch.Generator().manual_seed(0)
    x, msg = torch.randn(ROWS, 5, generator=generator), torch.randn(ROWS, WIDTH, generator=generator) * 3
    return x, msg, torch.tensor([1.5]).requires_grad_()


def _draws(x, msg, scale, grad, draws: int):
    samples = []
    for seed in range(draws):
        leaves = (x.clone().requires_grad_(), msg.clone().requires_grad_())
        out = MessageNormFunction.apply(*leaves, scale, CompressionConfig(), SeedStream(seed))
        samples.append(torch.autograd.grad(out, (*leaves, scale), grad))
    return [torch.stack(column).double() for column in zip(*samples, strict=True)]


def test_pygs_values_and_unbiased_gradients_and_one_copy_would_not_be(monkeypatch):
    x, msg, scale = _inputs()
    grad = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(1))
    leaves = (x.clone().requires_grad_(), msg.clone().requires_grad_())
    stock = MessageNorm(learn_scale=True)
    stock.scale.data.copy_(scale.detach())
    expected = stock(*leaves)
    out = MessageNormFunction.apply(x, msg, scale, CompressionConfig(), SeedStream(0))
    assert torch.equal(out, expected)
    exact = torch.autograd.grad(expected, (*leaves, stock.scale), grad)
    draws = _draws(x, msg, scale, grad, 1000)
    for samples, reference in zip(draws, exact, strict=True):
        assert bias_statistic(samples, reference) < threshold(reference.numel())

    pack, copies = message_norm.pack, {}

    def one_copy(tensor, config, seeds, argument=False):  # the second pack of U returns the first's codes
        key = (tensor.data_ptr(), tensor.shape)
        return copies.pop(key) if key in copies else copies.setdefault(key, pack(tensor, config, seeds, argument))

    monkeypatch.setattr(message_norm, "pack", one_copy)
    biased = _draws(x, msg, scale, grad, 1000)[1]
    assert bias_statistic(biased, exact[1]) > 10


def test_a_zero_message_and_zero_features_take_torchs_gradient():
    """normalize's clamp: a zero message's gradient is dY s |X| / eps; a zero row of X gets none
    (here up to the rounding of the other rows in its block: unbiased, not exact)."""
    x, msg, scale = _inputs()
    msg[3], x[5] = 0.0, 0.0
    grad = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(1))
    leaves = (x.clone().requires_grad_(), msg.clone().requires_grad_())
    stock = MessageNorm(learn_scale=True)
    stock.scale.data.copy_(scale.detach())
    exact = torch.autograd.grad(stock(*leaves), leaves, grad)
    ours = torch.autograd.grad(
        MessageNormFunction.apply(*leaves, scale, CompressionConfig(bits=8), SeedStream(0)), leaves, grad
    )
    torch.testing.assert_close(ours[1][3], exact[1][3])
    assert torch.equal(exact[0][5], torch.zeros(5))
    torch.testing.assert_close(ours[0][5], exact[0][5], atol=1e-3, rtol=0)  # 8-bit rounding noise about 0


def test_keeps_the_unit_messages_once_when_they_need_no_gradient():
    x, msg, scale = _inputs()
    config = CompressionConfig()
    out = MessageNormFunction.apply(x.requires_grad_(), msg, scale, config, SeedStream(0))
    one = MessageNormFunction.apply(x, msg.requires_grad_(), scale, config, SeedStream(0))
    saved = [sum(t.nbytes for t in result.grad_fn.saved_tensors if t is not scale) for result in (out, one)]
    assert saved[0] < saved[1]  # U once and V, against U twice and V
