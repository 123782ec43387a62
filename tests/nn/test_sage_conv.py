"""``SAGEConv``: its input stored once for both linear maps; on a CSR graph, target rows a slice at a time."""

import copy

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import SAGEConv
from torch_geometric.utils import to_torch_csr_tensor

import iexact
from iexact import CompressionConfig

from .examples import Example
from .forms import F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("SAGEConv mean", lambda channels: SAGEConv(channels, 7)),
    Example("SAGEConv sum project", lambda channels: SAGEConv(channels, 7, aggr="sum", project=True)),
]


def test_sage_stores_its_input_once():
    conv = iexact.compress_(SAGEConv(F_IN, 7), CompressionConfig())
    x = features(N, F_IN) * 1.0  # an activation, not the caller's leaf
    packed = iexact.compress(x.detach(), CompressionConfig())
    report = iexact.activation_memory(conv, x, edges())
    assert report.total == packed.nbytes and report.uncompressed == 0


def test_the_callers_own_input_is_kept_by_reference():
    """A leaf input (data.x) costs no bytes and no noise: its weight gradient is exact."""
    conv = SAGEConv(F_IN, 7)
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x, graph = torch.randn(N, F_IN), edges()
    report = iexact.activation_memory(conv, x, graph)
    assert report.total == 0 and report.held_elsewhere >= x.nbytes
    for layer in (conv, twin):
        layer(x, graph).square().sum().backward()
    for ours, theirs in zip(conv.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad)
    without = CompressionConfig(reference_inputs=False)
    assert (
        iexact.activation_memory(iexact.compress_(conv, without), x, graph).total == iexact.compress(x, without).nbytes
    )


def test_static_graphs():
    """x of shape (B, N, F) with node_dim=-2 aggregates along N."""
    out = compare(lambda: SAGEConv(F_IN, F_OUT), lambda conv, x: conv(x, edges()), [features(3, N, F_IN)])
    assert out.shape == (3, N, F_OUT)


@pytest.mark.parametrize("graph_form", ["tensor", "EdgeIndex", "size"])
def test_bipartite_inputs(graph_form):
    edge_index = edges(12, 5)
    graph = EdgeIndex(edge_index, sparse_size=(12, 5)) if graph_form == "EdgeIndex" else edge_index
    kwargs = {"size": (12, 5)} if graph_form == "size" else {}
    x_dst = None if graph_form != "tensor" else features(5, 4, seed=3)
    out = compare(
        lambda: SAGEConv((F_IN, 4), F_OUT),
        lambda conv, x_src, x_dst: conv((x_src, x_dst), graph, **kwargs),
        [features(12, F_IN), x_dst],
    )
    assert out.shape == (5, F_OUT)


SAGE_FORMS = {
    "plain": (lambda: SAGEConv(F_IN, F_OUT), lambda: (features(N, F_IN),)),
    "sum": (lambda: SAGEConv(F_IN, F_OUT, aggr="sum"), lambda: (features(N, F_IN),)),
    "project": (lambda: SAGEConv(F_IN, F_OUT, project=True), lambda: (features(N, F_IN),)),
    "no root": (lambda: SAGEConv(F_IN, F_OUT, root_weight=False), lambda: (features(N, F_IN),)),
    "bipartite": (lambda: SAGEConv((F_IN, 3), F_OUT), lambda: ((features(N, F_IN), features(8, 3, seed=2)),)),
    "no targets": (lambda: SAGEConv((F_IN, 3), F_OUT), lambda: ((features(N, F_IN), None), (N, 8))),
}


@pytest.mark.parametrize("form", SAGE_FORMS)
@pytest.mark.parametrize("graph_form", ["edge_index", "csr", "csr by row slices"])
def test_sage_without_autograd_gives_pygs_output_bit_for_bit(form, graph_form, monkeypatch):
    """Every form, both graph forms; on CSR also with 4 target rows per slice."""
    from iexact import graph as graph_module

    if graph_form == "csr by row slices":
        monkeypatch.setattr(graph_module, "CHUNK_ELEMENTS", 4 * max(F_IN, F_OUT))
    factory, inputs = SAGE_FORMS[form]
    torch.manual_seed(0)
    conv = factory()
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x, *size = inputs()
    num_dst = size[0][1] if size else (x[1].size(0) if isinstance(x, tuple) else N)
    edge_index = edges(num_dst=num_dst)
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
    x, edge_index = features(N, F_IN), edges()
    with torch.no_grad():
        out = conv(x, edge_index)
        assert torch.equal(out, twin(x, edge_index))
    assert torch.equal(seen["converted"], seen["stock"]) and not torch.equal(seen["converted"], out)


@pytest.mark.parametrize("form", SAGE_FORMS)
@pytest.mark.parametrize("count", [60, 0])
def test_sage_on_csr_trains_row_slice_by_slice_as_pyg(form, count, monkeypatch):
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
    adj_t = to_torch_csr_tensor(edges(num_dst=num_dst, count=count).flip(0), size=(num_dst, N))
    pair = isinstance(x, tuple)
    leaves = list(x) if pair else [x]
    compare(factory, lambda conv, *sides: conv(tuple(sides) if pair else sides[0], adj_t, *size), leaves)
    assert calls == [1]
