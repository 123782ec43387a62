import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv, GENConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from torch_geometric.nn.models import GAT, GCN, GraphSAGE

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed
from iexact.nn.fallback import FallbackHandler


def _graph(nodes=60, edges=240, features=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, features, generator=generator)
    edge_index = torch.randint(0, nodes, (2, edges), generator=generator)
    return x, edge_index


def _models():
    return [
        GCN(16, 32, num_layers=2, out_channels=4, dropout=0.5),
        GraphSAGE(16, 32, num_layers=3, out_channels=4, dropout=0.5, act="leaky_relu"),
    ]


@pytest.mark.parametrize("index", [0, 1])
def test_eval_and_no_grad_outputs_are_identical(index):
    torch.manual_seed(0)
    model = _models()[index]
    twin = copy.deepcopy(model)
    iexact.compress_(model, CompressionConfig())
    x, edge_index = _graph()
    model.eval(), twin.eval()
    assert torch.equal(model(x, edge_index), twin(x, edge_index))
    model.train(), twin.train()
    with torch.no_grad():
        torch.manual_seed(1)
        ours = model(x, edge_index)
        torch.manual_seed(1)
        assert torch.equal(ours, twin(x, edge_index))


def test_parameters_state_dict_and_optimizer_survive():
    model = _models()[1]
    params = list(model.parameters())
    names = [name for name, _ in model.named_parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    iexact.compress_(model, CompressionConfig())
    assert [p is q for p, q in zip(params, model.parameters(), strict=True)] == [True] * len(params)
    assert [name for name, _ in model.named_parameters()] == names
    twin = _models()[1]
    twin.load_state_dict(model.state_dict())  # loads into an uncompressed twin
    model.load_state_dict(twin.state_dict())
    x, edge_index = _graph()
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(model(x, edge_index), torch.zeros(60, dtype=torch.long)).backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    trained = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()  # the module's own method, through the compressed class
    assert [p is q for p, q in zip(params, model.parameters(), strict=True)] == [True] * len(params)
    assert all(not torch.equal(a, b) for a, b in zip(trained, model.parameters(), strict=True) if a.dim() == 2)


def test_converted_modules_and_twice_is_harmless():
    model = _models()[1]
    iexact.compress_(model, CompressionConfig())
    converted = {name for name, module in model.named_modules() if is_compressed(module)}
    assert {"act", "dropout", "convs.0", "convs.2"} <= converted
    assert not converted & {"convs.0.lin_l", "convs.0.lin_r", "convs.2.lin_r"}  # computed by their conv
    classes = {name: type(m) for name, m in model.named_modules()}
    iexact.compress_(model, CompressionConfig(bits=4))
    assert {name: type(m) for name, m in model.named_modules()} == classes
    assert model.convs[0].iexact_config.bits == 4


def _kept_per_layer(model, x, edge_index):
    return {
        layer.name: (layer.compressed, layer.uncompressed)
        for layer in iexact.activation_memory(model, x, edge_index).layers
    }


CONV_MODELS = {
    "GCN": (lambda: GCN(16, 32, num_layers=3, out_channels=4), "lin"),
    "GraphSAGE": (lambda: GraphSAGE(16, 32, num_layers=3, out_channels=4), "lin_l"),
    "GAT": (lambda: GAT(16, 32, num_layers=3, out_channels=4, heads=2, residual=True), "lin"),
}


@pytest.mark.parametrize("name", sorted(CONV_MODELS))
def test_filter_fn_means_the_same_for_every_conv(name):
    """A converted conv computes its own linear maps: excluding one of them alone
    changes nothing, for every conv; excluding the conv and its children keeps
    that layer's activations full precision."""
    factory, linear = CONV_MODELS[name]
    x, edge_index = _graph()
    torch.manual_seed(0)
    everything = iexact.compress_(factory(), CompressionConfig())
    only_lin = iexact.compress_(factory(), CompressionConfig(), filter_fn=lambda m, n: n != f"convs.1.{linear}")
    assert _kept_per_layer(only_lin, x, edge_index) == _kept_per_layer(everything, x, edge_index)
    assert not is_compressed(getattr(everything.convs[1], linear))  # owned, left as it is
    whole = iexact.compress_(factory(), CompressionConfig(), filter_fn=lambda m, n: not n.startswith("convs.1"))
    assert not any(is_compressed(m) for m in whole.convs[1].modules())
    uncompressed, exact = {}, {}  # (exact: what the converted convs keep full precision by design)
    for layer, (_, full) in _kept_per_layer(whole, x, edge_index).items():
        uncompressed[layer[:7]] = uncompressed.get(layer[:7], 0) + full
    for layer, (_, full) in _kept_per_layer(everything, x, edge_index).items():
        exact[layer[:7]] = exact.get(layer[:7], 0) + full
    assert uncompressed["convs.1"] > exact.get("convs.1", 0)
    assert all(uncompressed.get(conv, 0) == exact.get(conv, 0) for conv in ("convs.0", "convs.2"))


def test_excluded_conv_still_compresses_its_children_through_its_own_forward():
    model = GCN(16, 32, num_layers=2, out_channels=4)
    iexact.compress_(model, CompressionConfig(), filter_fn=lambda module, name: name != "convs.1")
    assert not is_compressed(model.convs[1]) and is_compressed(model.convs[1].lin)
    x, edge_index = _graph()
    kept = _kept_per_layer(model, x, edge_index)
    assert kept["convs.1.lin"][0] > 0  # PyG's forward called the converted lin


@pytest.mark.parametrize("rp_edge_convs", [False, True])
def test_a_genconvs_node_modules_take_the_edge_conv_config(rp_edge_convs):
    """GENConv keeps its messages per edge: its MLP and linear maps, which
    compute on its nodes, keep their inputs unprojected unless
    ``rp_edge_convs``, whether the conv is handled or takes the fallback
    (``powermean``); a module outside it keeps the config given."""
    config = CompressionConfig(rp_edge_convs=rp_edge_convs)
    model = torch.nn.ModuleDict(
        {
            "conv": GENConv(8, 16, aggr="softmax", learn_t=True),
            "fallback": GENConv(8, 16, aggr="powermean"),
            "out": torch.nn.Linear(16, 3),
        }
    )
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*: fallback \(GENConv, aggr='powermean'"):
        configs = iexact.nn.module_configs(iexact.compress_(model, config))
    node_modules = [
        f"{conv}.{child}"
        for conv in ("conv", "fallback")
        for child in ("lin_src", "lin_dst", "mlp.0", "mlp.1", "mlp.4")
    ]  # mlp: Linear, BatchNorm, ReLU, Dropout, Linear
    assert {name: configs[name] for name in node_modules} == dict.fromkeys(node_modules, config.edge_conv_inputs)
    assert configs["out"] == config and configs["conv.aggr_module"] == config


def test_generated_classes_live_in_iexact_nn():
    model = iexact.compress_(_models()[1], CompressionConfig())
    for module in model.modules():
        if is_compressed(module):
            assert type(module).__module__ == "iexact.nn"
            assert type(module).__name__ == f"Compressed{module.iexact_base.__name__}"


def test_users_register_their_own_handlers():
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return x * self.weight

    from iexact.autograd import EpsScaleFunction

    @iexact.nn.register_handler(Scale)
    class ScaleHandler(iexact.nn.CompressedModule):
        def forward(self, x):
            if not self._compressing():
                return super().forward(x)
            return EpsScaleFunction.apply(x, self.weight - 1, self.iexact_config, self.iexact_seeds)

    model = torch.nn.Sequential(torch.nn.Linear(16, 16), Scale())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a registered handler is no "unconverted module"
        iexact.compress_(model, CompressionConfig())
    assert is_compressed(model[1]) and iexact.nn.HANDLERS[Scale] is ScaleHandler
    x = torch.randn(60, 16)
    report = iexact.activation_memory(model, x)
    # the Linear keeps a reference to the caller's x (held elsewhere), the handler its compressed input
    # and the exact (1 + eps) it scales by
    assert report.uncompressed == 4 and {layer.name for layer in report.layers} == {"1"}
    assert report.held_elsewhere >= x.nbytes
    with pytest.raises(TypeError, match="subclass iexact.nn.CompressedModule"):
        iexact.nn.register_handler(Scale)(object)


def test_unconverted_modules_are_named_in_a_warning():
    model = GraphSAGE(16, 32, num_layers=2, out_channels=4, norm="layer_norm", act="hardswish", aggr="max")
    with pytest.warns(UserWarning) as caught:
        iexact.compress_(model, CompressionConfig())
    message = str(caught[0].message)
    assert "saved-tensor fallback" in message and "full precision" not in message
    for expected in ("convs.0 (SAGEConv, aggr='max'", "norms.0 (LayerNorm, mode='graph'", "act (Hardswish)"):
        assert expected in message
    assert is_compressed(model.convs[0].lin_l)  # its linear children still are, by their handler
    assert isinstance(model.convs[0], FallbackHandler)
    with pytest.warns(UserWarning, match="stay full precision: act \\(Hardswish\\), convs.0 \\(SAGEConv"):
        iexact.compress_(model, CompressionConfig(), fallback=None)
    assert not is_compressed(model.convs[0]) and is_compressed(model.convs[0].lin_l)
    assert not is_compressed(model.act)  # the first call's fallback taken back, as for the convs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iexact.compress_(_models()[0], CompressionConfig())


class Scaled(torch.nn.Module):
    """A module computing with a buffer of its own and an activation (as PerformerAttention's kernel features)."""

    def __init__(self, child: torch.nn.Module):
        super().__init__()
        self.register_buffer("projection", torch.randn(16, 64))
        self.child = child

    def forward(self, x):
        return self.child(x @ self.projection).square()


def test_a_module_computing_with_its_own_buffer_is_compressed_or_named():
    """What it saves (here 64-wide products and squares) was kept full precision without a word."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), Scaled(torch.nn.ReLU()))
    x = torch.randn(500, 16)
    before = iexact.activation_memory(model, x)
    with pytest.warns(UserWarning, match=r"saved-tensor fallback .*: 1 \(Scaled\)"):
        iexact.compress_(model, CompressionConfig())
    report = iexact.activation_memory(model, x)
    assert isinstance(model[1], FallbackHandler) and report.uncompressed < 0.01 * before.uncompressed
    container = torch.nn.Sequential(Scaled(torch.nn.Linear(64, 64)))  # its child computes: left to the child
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iexact.compress_(container, CompressionConfig())
    assert not isinstance(container[0], FallbackHandler) and is_compressed(container[0].child)


def test_performer_attention_is_compressed_through_the_fallback():
    from torch_geometric.nn.attention import PerformerAttention

    attention = PerformerAttention(channels=16, heads=2)
    x = torch.randn(1, 300, 16)
    before = iexact.activation_memory(attention, x)
    with pytest.warns(UserWarning, match=r"fast_attn \(PerformerProjection\)"):
        iexact.compress_(attention, CompressionConfig())
    after = iexact.activation_memory(attention, x)
    assert after.uncompressed < 0.05 * before.uncompressed
    assert after.compressed + after.uncompressed < 0.4 * before.uncompressed


@pytest.mark.parametrize("index", [0, 1])
def test_gradients_at_8_bits_match_uncompressed(index):
    torch.manual_seed(3)
    model = _models()[index]
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    twin = copy.deepcopy(model)
    iexact.compress_(model, CompressionConfig(bits=8, block_size=64, rp_ratio=1))
    x, edge_index = _graph()
    target = torch.randint(0, 4, (60,))
    F.cross_entropy(model(x, edge_index), target).backward()
    F.cross_entropy(twin(x, edge_index), target).backward()
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters(), strict=True):
        cosine = F.cosine_similarity(ours.grad.flatten(), theirs.grad.flatten(), dim=0)
        assert cosine >= 0.999, name


@pytest.mark.parametrize("convert_first", [True, False])
def test_model_in_another_dtype_keeps_working(convert_first):
    torch.manual_seed(0)
    model = GraphSAGE(16, 32, num_layers=3, out_channels=4, norm="batch", dropout=0.5)
    if convert_first:
        iexact.compress_(model, CompressionConfig())
        model.double()
    else:
        iexact.compress_(model.double(), CompressionConfig())
    x, edge_index = _graph()
    out = model(x.double(), edge_index)
    assert out.dtype == torch.float64
    F.cross_entropy(out, torch.zeros(60, dtype=torch.long)).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad.dtype == torch.float64 and torch.isfinite(parameter.grad).all(), name
    model.eval()
    twin = GraphSAGE(16, 32, num_layers=3, out_channels=4, norm="batch", dropout=0.5).double().eval()
    twin.load_state_dict(model.state_dict())
    assert torch.equal(model(x.double(), edge_index), twin(x.double(), edge_index))


def test_whole_model_pickles_and_copies(tmp_path):
    torch.manual_seed(0)
    model = iexact.compress_(_models()[1], CompressionConfig(bits=4))
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    for restored in (loaded, copy.deepcopy(model)):
        assert is_compressed(restored.convs[0]) and restored.convs[0].iexact_config.bits == 4
        x, edge_index = _graph()
        restored.eval(), model.eval()
        assert torch.equal(restored(x, edge_index), model(x, edge_index))
        restored.train()
        restored(x, edge_index).sum().backward()


@pytest.mark.parametrize(
    "build, call",
    [
        (lambda: PyGLinear(-1, 8), lambda module: module(torch.randn(5, 16))),
        (lambda: GCNConv(-1, 8), lambda module: module(torch.randn(5, 16), torch.tensor([[0, 1], [1, 2]]))),
        (lambda: SAGEConv((-1, -1), 8), lambda module: module(torch.randn(5, 16), torch.tensor([[0, 1], [1, 2]]))),
    ],
    ids=["PyG Linear", "GCNConv", "SAGEConv"],
)
def test_a_lazy_module_is_named_until_its_first_forward(build, call):
    """Every handler refuses a module with an uninitialized weight (its own or a child's it computes)
    with the same reason; after one forward pass the module converts."""
    module = build()
    with pytest.warns(UserWarning, match=r"lazy \(run one forward pass before compress_\)"):
        iexact.compress_(module, CompressionConfig())
    assert not any(is_compressed(m) for m in module.modules())
    call(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iexact.compress_(module, CompressionConfig())
    assert is_compressed(module)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("not a model", CompressionConfig()), "model must be a torch.nn.Module, got str"),
        ((torch.nn.Linear(2, 2), {"bits": 2}), "config must be an iexact.CompressionConfig, got dict"),
        ((torch.nn.Linear(2, 2), CompressionConfig(), "convs.0"), "filter_fn must be callable"),
    ],
)
def test_wrong_argument_types_are_named(arguments, message):
    with pytest.raises(TypeError, match=message):
        iexact.compress_(*arguments)


def test_configure_and_calibrate_name_wrong_argument_types():
    model = iexact.compress_(torch.nn.Linear(4, 2), CompressionConfig())
    with pytest.raises(TypeError, match="configs must map module names to configs, got list"):
        iexact.configure_(model, [CompressionConfig()])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        iexact.configure_("model", {})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        iexact.calibrate_("model", torch.randn(3, 4))
