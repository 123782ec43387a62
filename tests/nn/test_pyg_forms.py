"""Every input form and integration PyG gives a conv, converted module against its stock twin.

Each case runs the converted conv (8 bits, so gradients are near exact) and
an unconverted copy on the same inputs in training mode: outputs must be
equal and gradients aligned, and the conv must either compress silently or
run PyG's own forward with one warning naming why. A malformed input must
raise PyG's own error. The last test compares the handlers' signatures with
PyG's, so an upgrade that adds an argument (a new input form) fails here.
"""

import copy
import dataclasses
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch_geometric import EdgeIndex
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.nn import GATConv, GCN2Conv, GCNConv, GINConv, SAGEConv
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_torch_csr_tensor

import iexact
from iexact import CompressionConfig
from iexact.nn import HANDLERS

EIGHT_BITS = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
N, F_IN, F_OUT = 20, 6, 5


def _edges(num_src=N, num_dst=N, count=60, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, num_src, (count,), generator=generator),
            torch.randint(0, num_dst, (count,), generator=generator),
        ]
    )


def _features(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


CONVS = {
    "GCNConv": lambda: GCNConv(F_IN, F_OUT),
    "SAGEConv": lambda: SAGEConv(F_IN, F_OUT),
    "GINConv": lambda: GINConv(torch.nn.Linear(F_IN, F_OUT), train_eps=True),
    "GATConv": lambda: GATConv(F_IN, F_OUT, heads=2),
    "GCN2Conv": lambda: GCN2Conv(F_IN, alpha=0.1),
}


def _call(conv, name, x, graph, **kwargs):
    if name == "GCN2Conv":
        return conv(x, x.detach() * 0.5, graph, **kwargs)
    return conv(x, graph, **kwargs)


def _compare(factory, run, inputs, warns: str | None = None):
    """Run ``run(module, *inputs)`` on the converted module and on its twin and compare."""
    torch.manual_seed(0)
    module = factory()
    twin = copy.deepcopy(module)
    iexact.compress_(module, EIGHT_BITS)
    results = []
    for layer in (module, twin):
        leaves = [
            t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) and t.requires_grad else t
            for t in inputs
        ]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(1)
            out = run(layer, *leaves)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        out.backward(grad)
        ours = [str(w.message) for w in caught if "iexact" in str(w.message)]
        grads = [t.grad for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append((out.detach(), grads + [p.grad for p in layer.parameters()], ours))
    (out, grads, ours), (expected, expected_grads, _) = results
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, expected_grads, strict=True):
        assert (a is None) == (b is None)
        if b is not None and b.norm() > 1e-5:
            assert F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0) > 0.999
    if warns is None:
        assert ours == []
    else:
        assert len(ours) == 1 and warns in ours[0], ours
    return out


@pytest.mark.parametrize("name", ["GCNConv", "SAGEConv", "GINConv"])
def test_static_graphs(name):
    """x of shape (B, N, F) with node_dim=-2 aggregates along N."""
    out = _compare(CONVS[name], lambda conv, x: conv(x, _edges()), [_features(3, N, F_IN)])
    assert out.shape == (3, N, F_OUT)


@pytest.mark.parametrize("name", ["GATConv", "GCN2Conv"])
def test_static_graphs_are_refused_as_pyg_refuses_them(name):
    conv, twin = CONVS[name](), CONVS[name]()
    iexact.compress_(conv, EIGHT_BITS)
    x = _features(3, N, F_IN)
    errors = []
    for layer in (conv, twin):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as error:
                _call(layer, name, x, _edges())
        errors.append((type(error.value), str(error.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex", "size"])
@pytest.mark.parametrize("name", ["SAGEConv", "GINConv"])
def test_bipartite_inputs(name, graph_form):
    edge_index = _edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    kwargs = {"size": (12, 5)} if graph_form == "size" else {}
    factory = (lambda: SAGEConv((F_IN, 4), F_OUT)) if name == "SAGEConv" else CONVS[name]
    x_dst = None if graph_form != "tensor" else _features(5, 4 if name == "SAGEConv" else F_IN, seed=3)
    out = _compare(
        factory, lambda conv, x_src, x_dst: conv((x_src, x_dst), graph, **kwargs), [_features(12, F_IN), x_dst]
    )
    assert out.shape == (5, F_OUT)


@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
@pytest.mark.parametrize("name", sorted(CONVS))
def test_flow_and_size_argument(name, flow):
    factory = CONVS[name]

    def build():
        conv = factory()
        conv.flow = flow
        return conv

    kwargs = {"size": (N, N)} if name in ("SAGEConv", "GINConv", "GATConv") else {}
    _compare(build, lambda conv, x: _call(conv, name, x, _edges(), **kwargs), [_features(N, F_IN)])


@pytest.mark.parametrize("name", sorted(CONVS))
def test_empty_graphs_and_graphs_without_edges(name):
    empty = torch.empty(2, 0, dtype=torch.long)
    _compare(CONVS[name], lambda conv, x: _call(conv, name, x, empty), [_features(N, F_IN)])
    _compare(CONVS[name], lambda conv, x: _call(conv, name, x, empty), [_features(0, F_IN)])


def test_sparse_input_features_run_the_stock_forward():
    x = torch.randn(N, F_IN).to_sparse()
    _compare(CONVS["GCNConv"], lambda conv, x: conv(x, _edges()), [x], warns="sparse tensor")


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch_sparse is not installed")
@pytest.mark.parametrize("name", sorted(CONVS))
def test_torch_sparse_adjacency_runs_the_stock_forward(name):
    adj_t = SparseTensor.from_edge_index(_edges(), sparse_sizes=(N, N)).t()
    _compare(CONVS[name], lambda conv, x: _call(conv, name, x, adj_t), [_features(N, F_IN)], warns="SparseTensor")


@pytest.mark.parametrize("name", sorted(CONVS))
def test_explain_masks_set_after_conversion_are_honoured(name):
    """set_masks after compress_: the mask changes the output and gets its gradient, as in PyG."""
    edge_index = _edges()

    def run(conv, x, mask):
        set_masks(conv, mask, edge_index, apply_sigmoid=True)
        try:
            return _call(conv, name, x, edge_index)
        finally:
            clear_masks(conv)

    _compare(CONVS[name], run, [_features(N, F_IN), _features(edge_index.shape[1], seed=4)], warns="explain")


def test_explain_masks_on_a_copied_converted_conv():
    """Unpickling (deepcopy) a converted conv must not leave it a propagate without explain support."""
    edge_index = _edges()

    def run(conv, x, mask):
        conv = copy.deepcopy(conv)
        set_masks(conv, mask, edge_index, apply_sigmoid=True)
        return conv(x, edge_index)

    _compare(CONVS["SAGEConv"], run, [_features(N, F_IN), _features(edge_index.shape[1], seed=4)], warns="explain")


@pytest.mark.parametrize("kind", ["propagate", "message"])
@pytest.mark.parametrize("name", sorted(CONVS))
def test_propagate_and_message_hooks_fire(name, kind):
    calls = []

    def run(conv, x):
        handle = getattr(conv, f"register_{kind}_forward_hook")(lambda *args: calls.append(kind))
        try:
            return _call(conv, name, x, _edges())
        finally:
            handle.remove()

    _compare(CONVS[name], run, [_features(N, F_IN)], warns=f"{kind} forward hooks")
    assert len(calls) == 2  # the converted conv's and its twin's


@pytest.mark.parametrize("name", ["SAGEConv", "GINConv", "GCNConv"])
@pytest.mark.parametrize("bad", ["transposed", "three rows", "float"])
def test_malformed_edge_index_raises_pygs_error(name, bad):
    edge_index = {
        "transposed": _edges().t().contiguous(),
        "three rows": torch.randint(0, N, (3, 60)),
        "float": _edges().float(),
    }[bad]
    conv = CONVS[name]()
    if name == "GCNConv":
        conv.normalize = False
    iexact.compress_(conv, EIGHT_BITS)
    with pytest.raises(ValueError, match="edge_index"):
        conv(_features(N, F_IN), edge_index)
    conv.eval()
    with pytest.raises(ValueError, match="edge_index"):
        conv(_features(N, F_IN), edge_index)


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("node", [N + 3, -1])
def test_node_indices_out_of_range_raise(name, node):
    """An index past the nodes (or negative) fails in training as it does in eval(), never trains."""
    edge_index = torch.cat([_edges(), torch.tensor([[2], [node]])], dim=1)
    conv = CONVS[name]()
    iexact.compress_(conv, EIGHT_BITS)
    with pytest.raises((IndexError, RuntimeError, ValueError), match="index|indices|dim_size"):
        _call(conv, name, _features(N, F_IN), edge_index)


@pytest.mark.parametrize("base", sorted(HANDLERS, key=lambda cls: cls.__name__), ids=lambda cls: cls.__name__)
def test_handlers_take_exactly_pygs_arguments(base):
    """A handler's forward has the module's own signature: a new PyG argument fails here."""
    handler = HANDLERS[base]
    ours = inspect.signature(handler.forward).parameters
    theirs = inspect.signature(base.forward).parameters
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].default == theirs[key].default, key


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex", "size", "no target features"])
@pytest.mark.parametrize(
    "variant", ["shared lin", "lin_src and lin_dst", "residual, mean of heads", "no self-loops", "dropout"]
)
def test_gat_bipartite_inputs(variant, graph_form):
    in_channels = (F_IN, 4) if variant == "lin_src and lin_dst" else F_IN
    options = {
        "shared lin": {},
        "lin_src and lin_dst": {},
        "no self-loops": {"add_self_loops": False},
        "residual, mean of heads": {"residual": True, "concat": False},
        "dropout": {"dropout": 0.3},
    }[variant]
    edge_index = _edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    kwargs = {"size": (12, 5)} if graph_form in ("size", "no target features") else {}
    x_dst = (
        None
        if graph_form == "no target features"
        else _features(5, 4 if isinstance(in_channels, tuple) else F_IN, seed=3)
    )
    out = _compare(
        lambda: GATConv(in_channels, F_OUT, heads=2, **options),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), graph, **kwargs),
        [_features(12, F_IN), x_dst],
    )
    assert out.shape == (5, F_OUT * (1 if "mean" in variant else 2))


def test_gat_bipartite_weights_on_one_node_set_and_what_is_kept():
    """A conv built for a pair of in_channels applies lin_src and lin_dst to one tensor, as PyG does."""
    _compare(
        lambda: GATConv((F_IN, F_IN), F_OUT, heads=2, residual=True),
        lambda conv, x: conv(x, _edges()),
        [_features(N, F_IN)],
    )
    conv = iexact.compress_(GATConv((F_IN, 4), F_OUT, heads=2), dataclasses.replace(EIGHT_BITS, reference_inputs=False))
    report = iexact.activation_memory(conv, (torch.randn(12, F_IN), torch.randn(5, 4)), _edges(12, 5))
    assert report.uncompressed == 0
    # 8-bit codes of x_src and x_dst, of the source features twice and the target features once
    # (2 heads x 5 channels); float32 scores of both sides
    assert sorted(row.nbytes for row in report.saved if row.dtype == torch.uint8) == [20, 50, 72, 120, 120]
    assert sorted(row.shape for row in report.saved if row.dtype == torch.float32) == [(5, 2), (12, 2)]


def test_gat_pairs_under_target_to_source_run_the_stock_forward():
    def build():
        conv = CONVS["GATConv"]()
        conv.flow = "target_to_source"
        return conv

    _compare(
        build,
        lambda conv, x_src, x_dst: conv((x_src, x_dst), _edges(5, 12)),
        [_features(12, F_IN), _features(5, F_IN, seed=3)],
        warns="target_to_source",
    )


SAGE_FORMS = {
    "plain": (lambda: SAGEConv(F_IN, F_OUT), lambda: (_features(N, F_IN),)),
    "sum": (lambda: SAGEConv(F_IN, F_OUT, aggr="sum"), lambda: (_features(N, F_IN),)),
    "project": (lambda: SAGEConv(F_IN, F_OUT, project=True), lambda: (_features(N, F_IN),)),
    "no root": (lambda: SAGEConv(F_IN, F_OUT, root_weight=False), lambda: (_features(N, F_IN),)),
    "bipartite": (lambda: SAGEConv((F_IN, 3), F_OUT), lambda: ((_features(N, F_IN), _features(8, 3, seed=2)),)),
    "no targets": (lambda: SAGEConv((F_IN, 3), F_OUT), lambda: ((_features(N, F_IN), None), (N, 8))),
}


@pytest.mark.parametrize("form", SAGE_FORMS)
@pytest.mark.parametrize("graph_form", ["edge_index", "csr"])
def test_sage_without_autograd_gives_pygs_output_bit_for_bit(form, graph_form):
    factory, inputs = SAGE_FORMS[form]
    torch.manual_seed(0)
    conv = factory()
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x, *size = inputs()
    num_dst = size[0][1] if size else (x[1].size(0) if isinstance(x, tuple) else N)
    edge_index = _edges(num_dst=num_dst)
    graph = edge_index if graph_form == "edge_index" else to_torch_csr_tensor(edge_index.flip(0), size=(num_dst, N))
    for training in (False, True):
        conv.train(training), twin.train(training)
        with torch.no_grad():
            assert torch.equal(conv(x, graph, *size), twin(x, graph, *size))


def test_sage_without_autograd_runs_pygs_forward_where_a_hook_sees_lin_l():
    torch.manual_seed(0)
    conv = SAGEConv(F_IN, F_OUT)
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    seen = {}
    for name, layer in (("converted", conv), ("stock", twin)):
        layer.lin_l.register_forward_hook(lambda module, args, out, name=name: seen.setdefault(name, out))
    x, edge_index = _features(N, F_IN), _edges()
    with torch.no_grad():
        out = conv(x, edge_index)
        assert torch.equal(out, twin(x, edge_index))
    assert torch.equal(seen["converted"], seen["stock"]) and not torch.equal(seen["converted"], out)


@pytest.mark.parametrize("form", SAGE_FORMS)
@pytest.mark.parametrize("edges", [60, 0])
def test_sage_on_csr_trains_row_slice_by_slice_as_pyg(form, edges, monkeypatch):
    """Every SAGEConv form on a CSR adjacency (and one without edges) in
    training mode: PyG's output and gradients, through the row-chunked
    Function, 4 target rows per slice."""
    from iexact import graph as graph_module
    from iexact.autograd import RowChunkedSAGEFunction

    monkeypatch.setattr(graph_module, "CHUNK_ELEMENTS", 4 * F_OUT)
    calls = []
    apply = RowChunkedSAGEFunction.apply
    monkeypatch.setattr(RowChunkedSAGEFunction, "apply", lambda *args: calls.append(1) or apply(*args))
    factory, inputs = SAGE_FORMS[form]
    x, *size = inputs()
    num_dst = size[0][1] if size else (x[1].size(0) if isinstance(x, tuple) else N)
    adj_t = to_torch_csr_tensor(_edges(num_dst=num_dst, count=edges).flip(0), size=(num_dst, N))
    pair = isinstance(x, tuple)
    leaves = list(x) if pair else [x]
    _compare(factory, lambda conv, *sides: conv(tuple(sides) if pair else sides[0], adj_t, *size), leaves)
    assert calls == [1]
