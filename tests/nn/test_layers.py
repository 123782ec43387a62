"""Every converted layer against its uncompressed twin."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch_geometric import EdgeIndex
from torch_geometric.nn import MLP, BatchNorm, GATConv, GCN2Conv, GCNConv, GINConv, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed

EIGHT_BITS = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
NODES, FEATURES = 50, 12


def _cosine(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def _graph(kind, device):
    generator = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, NODES, (2, 300), generator=generator).to(device)
    if kind == "edge_index":
        return edge_index
    if kind == "EdgeIndex":
        return EdgeIndex(edge_index, sparse_size=(NODES, NODES))
    builder = to_torch_csr_tensor if kind == "csr" else to_torch_coo_tensor
    return builder(edge_index.flip(0), size=(NODES, NODES))  # adj_t: rows are targets


LAYERS = {
    "Linear": (lambda: torch.nn.Linear(FEATURES, 7), "x"),
    "PyGLinear": (lambda: PyGLinear(FEATURES, 7), "x"),
    "BatchNorm1d": (lambda: torch.nn.BatchNorm1d(FEATURES), "x"),
    "PyG BatchNorm": (lambda: BatchNorm(FEATURES), "x"),
    "ReLU": (lambda: torch.nn.ReLU(), "x"),
    "LeakyReLU": (lambda: torch.nn.LeakyReLU(0.1), "x"),
    "ELU": (lambda: torch.nn.ELU(0.7), "x"),
    "GCNConv": (lambda: GCNConv(FEATURES, 7), "graph"),
    "GCNConv cached improved": (lambda: GCNConv(FEATURES, 7, cached=True, improved=True), "graph"),
    "SAGEConv mean": (lambda: SAGEConv(FEATURES, 7), "graph"),
    "SAGEConv sum project": (lambda: SAGEConv(FEATURES, 7, aggr="sum", project=True), "graph"),
    "GINConv train_eps": (lambda: GINConv(MLP([FEATURES, 16, 7], norm="batch_norm"), train_eps=True), "graph"),
    "GATConv": (lambda: GATConv(FEATURES, 7, heads=3), "graph"),
    "GATConv mean residual": (lambda: GATConv(FEATURES, 7, heads=2, concat=False, residual=True), "graph"),
    "GCN2Conv": (lambda: GCN2Conv(FEATURES, alpha=0.2, theta=0.5, layer=2), "graph2"),
    "GCN2Conv unshared": (lambda: GCN2Conv(FEATURES, alpha=0.2, theta=0.5, layer=2, shared_weights=False), "graph2"),
}


def _run(module, inputs, grad_seed):
    out = module(*inputs)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.device)
    out.backward(grad)
    return out


@pytest.mark.parametrize("graph_kind", ["edge_index", "EdgeIndex", "csr", "coo"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients_at_8_bits_match_uncompressed(name, graph_kind, device):
    factory, kind = LAYERS[name]
    if kind == "x" and graph_kind != "edge_index":
        pytest.skip("no graph input")
    torch.manual_seed(0)
    module = factory().to(device)
    twin = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iexact.compress_(module, EIGHT_BITS)
    assert is_compressed(module) or any(is_compressed(m) for m in module.modules())
    x = torch.randn(NODES, FEATURES, device=device)
    graph = _graph(graph_kind, device) if kind != "x" else None
    results = []
    for layer in (module, twin):
        inputs = [x.clone().requires_grad_()]
        if kind == "graph2":
            inputs.append(
                torch.randn(NODES, FEATURES, generator=torch.Generator().manual_seed(5)).to(device).requires_grad_()
            )
        if graph is not None:
            inputs.append(graph)
        out = _run(layer, inputs, grad_seed=1)
        results.append(
            (
                out.detach(),
                [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad and t.grad is not None],
                [p.grad for p in layer.parameters()],
            )
        )
    (ours, our_input_grads, our_param_grads), (theirs, their_input_grads, their_param_grads) = results
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert len(our_input_grads) == len(their_input_grads) > 0
    for a, b in zip(our_input_grads + our_param_grads, their_input_grads + their_param_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b.norm() > 1e-5:  # a zero gradient (a bias before BatchNorm) has no direction
            assert _cosine(a, b) >= 0.999
    for a, b in zip(module.buffers(), twin.buffers(), strict=True):  # BatchNorm running statistics
        torch.testing.assert_close(a, b)


def test_dropout_keeps_a_generator_snapshot_and_backward_reuses_its_mask(device):
    dropout = iexact.compress_(torch.nn.Dropout(0.3), EIGHT_BITS)
    x = torch.rand(400, 30, device=device).add_(0.5).requires_grad_()
    out = dropout(x)
    kept = out != 0
    assert 0.6 < kept.float().mean().item() < 0.8
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    report = iexact.activation_memory(dropout, x)
    snapshot = torch.get_rng_state() if device.type == "cpu" else torch.cuda.get_rng_state(device)
    assert report.total == snapshot.nbytes and report.uncompressed == 0


def test_sage_stores_its_input_once():
    conv = SAGEConv(FEATURES, 7)
    iexact.compress_(conv, CompressionConfig())
    x = torch.randn(NODES, FEATURES, requires_grad=True) * 1.0  # an activation, not the caller's leaf
    packed = iexact.compress(x.detach(), CompressionConfig())
    report = iexact.activation_memory(conv, x, _graph("edge_index", "cpu"))
    assert report.total == packed.nbytes and report.uncompressed == 0


def test_the_callers_own_input_is_kept_by_reference():
    """A leaf input (data.x) costs no bytes and no noise: its weight gradient is exact."""
    conv = SAGEConv(FEATURES, 7)
    twin = copy.deepcopy(conv)
    iexact.compress_(conv, CompressionConfig())
    x, graph = torch.randn(NODES, FEATURES), _graph("edge_index", "cpu")
    report = iexact.activation_memory(conv, x, graph)
    assert report.total == 0 and report.held_elsewhere >= x.nbytes
    _run(conv, [x, graph], grad_seed=1)
    _run(twin, [x, graph], grad_seed=1)
    for ours, theirs in zip(conv.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad)
    without = CompressionConfig(reference_inputs=False)
    assert (
        iexact.activation_memory(iexact.compress_(conv, without), x, graph).total == iexact.compress(x, without).nbytes
    )
