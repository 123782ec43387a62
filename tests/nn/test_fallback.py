"""The saved-tensor fallback: modules no handler compresses keep what autograd saves compressed."""

import copy
import pickle
import warnings

import pytest
import torch
from torch_geometric.nn import MessagePassing, SAGEConv
from torch_geometric.nn.models import GAT
from torch_geometric.utils import to_torch_csr_tensor

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed, original_class
from iexact.nn.fallback import DEFAULT_FALLBACK, FALLBACK_MIN_BYTES, FallbackHandler

N, D = 600, 64  # a 600 x 64 float32 tensor is 150 KiB: above the fallback's threshold


class Attention(torch.nn.Module):
    """A layer no handler knows: softmax attention over the rows, tanh, a learned scale."""

    def __init__(self, channels):
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(channels) / channels**0.5)
        self.scale = torch.nn.Parameter(torch.ones(channels))

    def forward(self, x):
        h = torch.tanh(x * self.scale)
        weights = torch.softmax(h @ self.query, dim=0)
        return h * weights.unsqueeze(1) * N


class Peaks(torch.nn.Module):
    """Only values a backward compares (relu, then a max over rows) beside a matmul of the input."""

    def __init__(self, channels):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(channels, channels) / channels**0.5)

    def forward(self, x):
        h = torch.relu(x @ self.weight)
        return h.amax(dim=0) + h.sum(0)


def _twins(factory, **kwargs):
    torch.manual_seed(0)
    stock = factory()
    converted = copy.deepcopy(stock)
    with pytest.warns(UserWarning, match="saved-tensor fallback"):
        iexact.compress_(converted, CompressionConfig(), **kwargs)
    return stock, converted


def _x(seed=0, grad=False):
    return torch.randn(N, D, generator=torch.Generator().manual_seed(seed)).requires_grad_(grad)


def _gradients(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def test_a_module_without_handler_computes_the_same_forward_and_close_gradients():
    stock, converted = _twins(lambda: Attention(D))
    assert is_compressed(converted) and original_class(converted) is Attention
    assert converted.iexact_config == DEFAULT_FALLBACK
    x = _x()
    out, grad = _gradients(stock, x)
    out_c, grad_c = _gradients(converted, x)
    assert torch.equal(out, out_c)  # the fallback changes only what backward reads
    assert (grad_c - grad).norm() / grad.norm() < 0.02  # 8 bits
    converted.eval()
    assert torch.equal(converted(x), stock.eval()(x))


def test_what_the_fallback_keeps_is_compressed_and_counted():
    stock, converted = _twins(lambda: Attention(D))
    x = _x()
    fp32, report = iexact.activation_memory(stock, x), iexact.activation_memory(converted, x)
    assert fp32.compressed == 0 and report.uncompressed < FALLBACK_MIN_BYTES
    assert report.compressed > 0 and fp32.total > 3 * report.total  # 8 bits of 32, plus scales
    # the same tensors saved, each kept once: codes of N x D bytes per distinct full-size tensor
    assert all(saved.dtype in (torch.uint8, torch.bfloat16, torch.int64) for saved in report.saved if saved.compressed)


def test_values_a_backward_compares_are_kept_exact_and_relu_as_signs():
    stock, converted = _twins(lambda: Peaks(D))
    x = _x()
    out, grad = _gradients(stock, x)
    out_c, grad_c = _gradients(converted, x)
    assert torch.equal(out, out_c) and torch.equal(grad, grad_c)  # nothing rounded that backward compares
    report = iexact.activation_memory(converted, x)
    signs = [saved for saved in report.saved if saved.compressed]
    assert [saved.nbytes for saved in signs] == [N * D // 8]  # relu's output kept as one bit per element


def test_the_fallbacks_gradient_is_unbiased_where_backward_is_linear_in_what_it_keeps():
    """d(scale) = sum over rows of dY * h, linear in the kept h: the mean over draws approaches the
    exact gradient as 1/sqrt(draws); a rounding that is not stochastic would not."""

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(D))

        def forward(self, x):
            return (x.exp() * self.scale).sum()

    stock, converted = _twins(Scaled, fallback=CompressionConfig(bits=2, rp_ratio=1))
    x = _x()
    stock(x).backward()
    exact = stock.scale.grad.clone()
    draws = []
    for _ in range(64):
        converted.zero_grad()
        converted(x).backward()
        draws.append(converted.scale.grad.clone())
    single = (draws[0] - exact).norm() / exact.norm()
    of_mean = (torch.stack(draws).mean(0) - exact).norm() / exact.norm()
    assert single > 1e-3 and of_mean < 2 * single / 64**0.5


def test_converted_children_keep_their_own_codes_inside_a_fallback_module():
    class Block(MessagePassing):  # a layer of one's own, with a Linear child
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(D, D)

        def forward(self, x):
            return torch.sigmoid(self.lin(torch.tanh(x)))

    torch.manual_seed(0)
    model = Block()
    with pytest.warns(UserWarning, match=r"<model> \(Block\)"):
        iexact.compress_(model, CompressionConfig())
    assert is_compressed(model.lin) and isinstance(model, FallbackHandler)
    report = iexact.activation_memory(model, _x(grad=True))
    lin = sum(saved.nbytes for saved in report.saved if saved.layer == "lin")
    alone = iexact.compress_(torch.nn.Linear(D, D), CompressionConfig())
    assert lin == iexact.activation_memory(alone, torch.tanh(_x(grad=True))).compressed  # 2-bit codes, kept as such
    # from an input that needs no gradient, tanh(x) is a leaf, but no input of the module: the Linear
    # compresses it with its own config (2 bits, projected), as it would with a gradient
    report = iexact.activation_memory(model, _x())
    assert sum(saved.nbytes for saved in report.saved if saved.layer == "lin") == lin
    assert all(saved.compressed for saved in report.saved)
    model(_x()).sum().backward()

    class Direct(Block):  # the module's own input goes to the Linear: the caller's, kept by reference
        def forward(self, x):
            return torch.sigmoid(self.lin(x))

    direct = Direct()
    with pytest.warns(UserWarning, match=r"<model> \(Direct\)"):
        iexact.compress_(direct, CompressionConfig())
    assert not [saved for saved in iexact.activation_memory(direct, _x()).saved if saved.layer == "lin"]


def test_unsupported_settings_of_a_handled_conv_take_the_fallback_and_none_turns_it_off():
    edge_index = torch.randint(0, N, (2, 4 * N), generator=torch.Generator().manual_seed(1))
    conv = SAGEConv(D, D, aggr="max")
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*<model> \(SAGEConv, aggr='max'"):
        iexact.compress_(conv, CompressionConfig())
    assert isinstance(conv, FallbackHandler) and is_compressed(conv.lin_l)
    conv(_x(), edge_index).sum().backward()
    adjacency = to_torch_csr_tensor(edge_index, size=(N, N)).t()  # a sparse input: its storages are held too
    torch.testing.assert_close(conv(_x(), adjacency), conv(_x(), edge_index), rtol=1e-5, atol=1e-5)
    conv(_x(), adjacency).sum().backward()
    with pytest.warns(UserWarning, match=r"stay full precision: <model> \(SAGEConv, aggr='max'"):
        iexact.compress_(conv, CompressionConfig(), fallback=None)
    assert not is_compressed(conv) and type(conv) is SAGEConv
    with pytest.raises(TypeError, match="fallback must be an iexact.CompressionConfig or None"):
        iexact.compress_(conv, CompressionConfig(), fallback=8)


def test_a_stock_gatv2_reading_edge_features_keeps_several_times_less_and_trains():
    """GATv2Conv's handler leaves edge features in the attention to the fallback."""
    x, edge_index = _x(), torch.randint(0, N, (2, 8 * N), generator=torch.Generator().manual_seed(2))
    edge_attr = torch.randn(edge_index.shape[1], 3, generator=torch.Generator().manual_seed(3))
    stock, converted = _twins(lambda: GAT(D, 32, num_layers=2, out_channels=4, v2=True, edge_dim=3))
    fp32 = iexact.activation_memory(stock, x, edge_index, edge_attr=edge_attr)
    report = iexact.activation_memory(converted, x, edge_index, edge_attr=edge_attr)
    assert fp32.total > 3 * report.total
    torch.manual_seed(1)
    stock_out = stock(x, edge_index, edge_attr=edge_attr)
    torch.manual_seed(1)
    converted_out = converted(x, edge_index, edge_attr=edge_attr)
    assert torch.equal(stock_out, converted_out)
    converted_out.square().mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in converted.parameters())


def test_a_fallback_module_pickles_copies_and_restores():
    _, converted = _twins(lambda: Attention(D))
    for twin in (copy.deepcopy(converted), pickle.loads(pickle.dumps(converted))):
        assert type(twin) is type(converted) and twin.iexact_config == converted.iexact_config
        _gradients(twin, _x())
    iexact.nn.restore_(converted)
    assert type(converted) is Attention


def test_torch_compile_runs_a_fallback_module_eagerly_and_fullgraph_refuses_it_by_name():
    stock, converted = _twins(lambda: Attention(D))
    torch._dynamo.reset()  # no graph cached by an earlier test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception, match="iexact's saved-tensor fallback"):
            torch.compile(converted, backend="eager", fullgraph=True)(_x())
        out, grad = _gradients(stock, _x())
        out_c, grad_c = _gradients(torch.compile(converted, backend="eager"), _x())
    assert torch.equal(out, out_c) and (grad_c - grad).norm() / grad.norm() < 0.02
    assert iexact.activation_memory(converted, _x()).uncompressed < FALLBACK_MIN_BYTES
