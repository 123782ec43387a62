"""What a converted model's own code saves: the torch calls between its modules (PyG's examples' functional
dropout, ReLU and ELU), compressed as a module's would be, and nothing else changed."""

import copy
import gc
import math
import pickle
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import MLP, GATConv, GCNConv, GINConv

import iexact
from iexact import CompressionConfig
from iexact.nn import model_code
from iexact.nn.fallback import FALLBACK_MIN_BYTES

from .bias import bias_statistic, threshold

NODES, FEATURES, HIDDEN = 1000, 32, 64
EIGHT_BITS = CompressionConfig(bits=8, rp_ratio=1)


class ExampleGCN(torch.nn.Module):
    """PyG's ``examples/gcn.py``: dropout and ReLU between two convs, as functions."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = GCNConv(FEATURES, HIDDEN), GCNConv(HIDDEN, 8)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=0.5, training=self.training)
        x = self.conv1(x, edge_index).relu()
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index)


class ExampleGAT(torch.nn.Module):
    """PyG's ``examples/gat.py``: dropout and ELU between two attention convs."""

    def __init__(self):
        super().__init__()
        self.conv1 = GATConv(FEATURES, 8, heads=8, dropout=0.6)
        self.conv2 = GATConv(64, 8, heads=1, concat=False, dropout=0.6)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=0.6, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, p=0.6, training=self.training)
        return self.conv2(x, edge_index)


class Block(torch.nn.Module):
    """A user's block: a linear map, then ``activation`` as a function (a container: no parameter of its own)."""

    def __init__(self, activation):
        super().__init__()
        self.lin, self.activation = torch.nn.Linear(HIDDEN, HIDDEN), activation

    def forward(self, x):
        return self.activation(self.lin(x))


def _graph():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NODES, FEATURES, generator=generator)
    return x, torch.randint(0, NODES, (2, 8 * NODES), generator=generator)


def _twins(model, config=EIGHT_BITS, **kwargs):
    stock = copy.deepcopy(model)
    return stock, iexact.compress_(model, config, **kwargs)


def _row(report, name="(model)"):
    (layer,) = [layer for layer in report.layers if layer.name == name]
    return layer


def _gradients(model, *inputs, seed=1):
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(*inputs)
    out.square().mean().backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("masks", ["bits", "seed"])
def test_pyg_gcn_example_keeps_one_bit_per_relu_output_and_a_bit_or_a_generator_snapshot_for_its_dropout(masks):
    x, edge_index = _graph()
    torch.manual_seed(0)
    stock, converted = _twins(ExampleGCN(), CompressionConfig(dropout_masks=masks))
    fp32, kept = iexact.activation_memory(stock, x, edge_index), iexact.activation_memory(converted, x, edge_index)
    own = _row(kept)
    # DropoutFunction's mask, or its generator snapshot, in bytes
    dropout = math.ceil(NODES * HIDDEN / 8) if masks == "bits" else torch.get_rng_state().numel()
    assert own.uncompressed == 0 and own.compressed == math.ceil(NODES * HIDDEN / 8) + dropout
    assert _row(fp32).total == 2 * NODES * HIDDEN * 4  # the ReLU's output and the dropout's scaled mask
    assert fp32.total > 40 * kept.total
    # the convs keep what they kept before
    off = iexact.activation_memory(
        iexact.compress_(copy.deepcopy(stock), CompressionConfig(), fallback=None), x, edge_index
    )
    assert _row(off).uncompressed == _row(fp32).total
    for name in ("conv1", "conv2"):
        assert _row(off, name) == _row(kept, name)


def test_pyg_gat_example_keeps_its_elu_compressed_and_its_convs_as_they_were():
    x, edge_index = _graph()
    torch.manual_seed(0)
    stock, converted = _twins(ExampleGAT(), CompressionConfig())
    off = iexact.compress_(copy.deepcopy(stock), CompressionConfig(), fallback=None)
    kept, before = iexact.activation_memory(converted, x, edge_index), iexact.activation_memory(off, x, edge_index)
    assert _row(kept).uncompressed == 0 and _row(kept).compressed < _row(before).uncompressed / 10
    for name in ("conv1", "conv2"):
        assert _row(kept, name) == _row(before, name)  # GAT's exact attention scores stay exact


class Exact(torch.nn.Module):
    """Functional calls whose saved values the compressed model keeps exactly (or as one bit that is all
    their backward reads): ReLU, LeakyReLU, dropout, clamp, a maximum, between linear maps."""

    def __init__(self):
        super().__init__()
        self.lins = torch.nn.ModuleList(torch.nn.Linear(FEATURES if i == 0 else HIDDEN, HIDDEN) for i in range(3))

    def forward(self, x):
        x = F.dropout(self.lins[0](x).relu(), p=0.3, training=self.training)
        x = F.leaky_relu(self.lins[1](x), 0.1).clamp(max=1.0)
        x = self.lins[2](x)
        return x + torch.max(x, dim=1, keepdim=True).values


def test_forward_values_are_the_stock_models_and_gradients_bit_equal_where_nothing_is_rounded():
    x, _ = _graph()
    torch.manual_seed(0)
    # the linear maps left as they are: only the model's own code is compressed
    stock, converted = _twins(Exact(), filter_fn=lambda module, name: not name.startswith("lins"))
    out, grads = _gradients(stock, x)
    ours, our_grads = _gradients(converted, x)
    assert torch.equal(ours, out)
    for name, grad in grads.items():
        assert torch.equal(our_grads[name], grad), name
    own = _row(iexact.activation_memory(converted, x))
    assert own.compressed == 3 * NODES * HIDDEN // 8  # two signs, the dropout's mask (on CPU, as bits)
    assert own.uncompressed == NODES * HIDDEN * 4 + NODES * 8  # clamp's input and the maximum's indices, exact


@pytest.mark.parametrize(
    "activation",
    [
        F.elu,
        F.gelu,
        lambda x: F.gelu(x, approximate="tanh"),
        torch.tanh,
        torch.sigmoid,
        lambda x: x.sigmoid(),
        lambda x: F.softplus(x, beta=2.0),
        F.silu,
        F.mish,
    ],
    ids=["elu", "gelu", "gelu tanh", "torch.tanh", "torch.sigmoid", "Tensor.sigmoid", "softplus", "silu", "mish"],
)
def test_functional_activations_run_as_the_handlers_functions_unbiased(activation):
    torch.manual_seed(0)
    stock = Block(activation)
    converted = iexact.compress_(copy.deepcopy(stock), CompressionConfig(), filter_fn=lambda m, name: name != "lin")
    x = torch.randn(FALLBACK_MIN_BYTES // 4 // HIDDEN, HIDDEN, generator=torch.Generator().manual_seed(1))
    out, grads = _gradients(stock, x)
    ours, _ = _gradients(converted, x)
    assert torch.equal(ours, out)  # torch's own forward
    report = iexact.activation_memory(converted, x)
    assert _row(report).uncompressed == 0 and _row(report).compressed < x.numel()  # about 2 bits per element
    samples = torch.stack([_gradients(converted, x, seed=1)[1]["lin.weight"] for _ in range(256)])
    assert bias_statistic(samples, grads["lin.weight"]) < threshold(samples[0].numel())


def test_the_unbiasedness_check_fails_where_the_input_is_rounded_instead_of_the_derivative(monkeypatch):
    monkeypatch.setattr(model_code, "_ROUTES", {})  # gelu's input then kept by the generic rules, at 2 bits here
    torch.manual_seed(0)
    stock = Block(F.gelu)
    converted = iexact.compress_(
        copy.deepcopy(stock), CompressionConfig(), filter_fn=lambda m, name: name != "lin", fallback=CompressionConfig()
    )
    x = torch.randn(FALLBACK_MIN_BYTES // 4 // HIDDEN, HIDDEN, generator=torch.Generator().manual_seed(1))
    _, grads = _gradients(stock, x)
    samples = torch.stack([_gradients(converted, x, seed=1)[1]["lin.weight"] for _ in range(256)])
    assert bias_statistic(samples, grads["lin.weight"]) > threshold(samples[0].numel())


def test_a_block_is_the_models_code_but_not_an_excluded_block_nor_an_mlp_a_converted_conv_calls():
    torch.manual_seed(0)
    mlp = MLP([HIDDEN, HIDDEN, HIDDEN], dropout=0.5, norm=None)  # PyG's MLP applies its dropout as a function
    model = torch.nn.ModuleDict({"gin": GINConv(mlp), "block": Block(torch.tanh), "left": Block(torch.tanh)})

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = model

        def forward(self, x, edge_index):
            return self.parts["left"](self.parts["block"](self.parts["gin"](x, edge_index)))

    converted = iexact.compress_(Model(), CompressionConfig(), filter_fn=lambda m, name: name != "parts.left")
    x = torch.randn(NODES, HIDDEN, requires_grad=True)
    report = iexact.activation_memory(converted, x, _graph()[1])
    assert _row(report, "parts.gin.nn").uncompressed == NODES * HIDDEN * 4  # the conv's own business: its mask
    assert _row(report, "parts.block").uncompressed == 0
    assert _row(report, "parts.left").uncompressed == NODES * HIDDEN * 4  # tanh's output, as torch keeps it


def test_the_scope_closes_when_the_forward_raises_and_restore_removes_every_hook():
    x, edge_index = _graph()
    converted = iexact.compress_(ExampleGCN(), CompressionConfig())
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        converted(x, edge_index.float())
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    assert model_code._RUNNING.get() is None
    assert _row(iexact.activation_memory(converted, x, edge_index)).uncompressed == 0  # and works again
    iexact.compress_(converted, CompressionConfig())  # a second call: the same hooks, once
    assert len(converted._forward_pre_hooks) == 4 and len(converted.conv1._forward_pre_hooks) == 1
    iexact.nn.restore_(converted)
    assert not any(module._forward_pre_hooks or module._forward_hooks for module in converted.modules())
    assert not any(model_code._SETTINGS in vars(module) for module in converted.modules())


def test_a_pickled_model_keeps_its_code_compressed():
    x, edge_index = _graph()
    converted = pickle.loads(pickle.dumps(iexact.compress_(ExampleGCN(), CompressionConfig())))
    assert _row(iexact.activation_memory(converted, x, edge_index)).uncompressed == 0


def test_compiled_whole_the_model_keeps_one_graph():
    x, edge_index = _graph()
    converted = iexact.compress_(ExampleGCN(), CompressionConfig())
    compiled = torch.compile(converted, fullgraph=True, backend="eager")
    compiled(x, edge_index).sum().backward()
    assert model_code._RUNNING.get() is None


def test_nothing_of_a_forward_outlives_its_graph_without_the_garbage_collector():
    """The saved-tensor hooks live as long as the graph, and no reference cycle keeps them (or what they packed)."""
    x, edge_index = _graph()
    converted = iexact.compress_(ExampleGCN(), CompressionConfig())
    hooks = []  # the forward's saved-tensor hooks, weakly

    def record(module, args):
        hooks.append(weakref.ref(model_code._RUNNING.get().saved))

    converted.conv2.register_forward_pre_hook(record)
    gc.disable()
    try:
        out = converted(x, edge_index)
        assert hooks[0]() is not None  # the ReLU's signs unpack through them
        del out
        assert hooks[0]() is None
    finally:
        gc.enable()
