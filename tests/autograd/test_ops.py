import pytest
import torch
import torch.nn.functional as F

from iexact import CompressionConfig
from iexact.autograd import (
    CompressedLeakyReLUFunction,
    CompressedLinearFunction,
    CompressedReLUFunction,
    DropoutFunction,
)
from iexact.quant import pack_mask, unpack_mask


def _cosine(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


@pytest.mark.parametrize("shape", [(1,), (7, 3), (4, 5, 9)])
def test_mask_round_trip(shape, device):
    mask = torch.rand(shape, device=device) > 0.4
    packed = pack_mask(mask)
    assert packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_mask(packed, mask.shape), mask)


def test_masks_packed_chunk_by_chunk_are_the_same_bytes(monkeypatch):
    from iexact.quant import bitmask

    mask = torch.rand(7, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    whole = pack_mask(mask)
    monkeypatch.setattr(bitmask, "MASK_CHUNK", 16)  # 63 elements: three whole chunks and one of 15
    assert torch.equal(pack_mask(mask), whole)
    assert torch.equal(unpack_mask(whole, mask.shape), mask)


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


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_gcn_norm_without_boolean_indexing_equals_pygs(weighted, improved, flow):
    """The padded normalization (the graph's loops kept at weight 0, one loop per
    node appended) is PyG's normalized adjacency, duplicate and weighted loops included."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm

    from iexact.ops.graph import gcn_norm

    generator = torch.Generator().manual_seed(0)
    n = 30
    edge_index = torch.randint(0, n, (2, 200), generator=generator)
    edge_index[:, :5] = torch.tensor([[3, 3, 7, 7, 9], [3, 3, 7, 7, 9]])  # loops, two of them twice
    weight = torch.rand(200, generator=generator) if weighted else None

    def dense(index, values):
        return torch.zeros(n, n).index_put_((index[0], index[1]), values, accumulate=True)

    expected = dense(*pyg_gcn_norm(edge_index, weight, n, improved, True, flow, torch.float32))
    index, values = gcn_norm(edge_index, weight, n, improved, True, flow, torch.float32)
    assert index.shape == (2, 200 + n)
    torch.testing.assert_close(dense(index, values), expected, rtol=1e-6, atol=1e-7)
