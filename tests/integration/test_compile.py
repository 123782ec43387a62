"""``torch.compile`` of converted models: one graph, no breaks, the eager model's numbers.

iexact's codec, seed and dropout draws are ``torch.library`` custom operators
(:mod:`iexact.ops`), so dynamo traces a converted model whole. Each test
trains a compiled model beside an eager copy holding the same seed-stream
state and compares losses and parameters step by step; dropout masks are
drawn inside an operator, so they match too.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GAT, GCN, GIN, ChebConv, EdgeCNN, GraphSAGE, ResGatedGraphConv, Sequential

import iexact
from iexact import CompressionConfig
from iexact.experiments.models import GCNII, GraphTransformer

NODES, FEATURES, CLASSES = 120, 16, 4
MODELS = {
    "GCN": lambda: GCN(FEATURES, 32, 2, CLASSES, dropout=0.5, norm="batch_norm"),
    "GraphSAGE": lambda: GraphSAGE(FEATURES, 32, 2, CLASSES, dropout=0.5, norm="batch_norm"),
    "GIN": lambda: GIN(FEATURES, 32, 2, CLASSES, dropout=0.5, norm="batch_norm"),
    "GAT": lambda: GAT(FEATURES, 16, 2, CLASSES, heads=2, dropout=0.5, norm="batch_norm"),
    "GATv2": lambda: GAT(FEATURES, 16, 2, CLASSES, heads=2, dropout=0.5, v2=True),
    "ChebConv": lambda: Sequential(
        "x, edge_index",
        [
            (ChebConv(FEATURES, 32, K=3), "x, edge_index -> x"),
            torch.nn.ReLU(),
            (ChebConv(32, CLASSES, K=3), "x, edge_index -> x"),
        ],
    ),
    "ResGatedGraphConv": lambda: Sequential(
        "x, edge_index",
        [
            (ResGatedGraphConv(FEATURES, 32), "x, edge_index -> x"),
            torch.nn.ReLU(),
            (ResGatedGraphConv(32, CLASSES), "x, edge_index -> x"),
        ],
    ),
    "EdgeCNN": lambda: EdgeCNN(FEATURES, 16, 2, CLASSES, dropout=0.5),
    "Transformer": lambda: GraphTransformer(FEATURES, 16, 2, CLASSES, heads=2, dropout=0.5, norm="batch_norm"),
    "GCNII": lambda: GCNII(FEATURES, 32, 2, CLASSES, dropout=0.5),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: the models share code objects
    (``BasicGNN.forward``, each conv's), and compiled under and outside
    autocast in one session they would run out of dynamo's recompile limit."""
    torch._dynamo.reset()


def _data(device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NODES, FEATURES, generator=generator)
    edge_index = torch.randint(0, NODES, (2, 5 * NODES), generator=generator)
    y = torch.randint(0, CLASSES, (NODES,), generator=generator)
    return x.to(device), edge_index.to(device), y.to(device)


def _converted(name, device):
    torch.manual_seed(0)
    model = iexact.compress_(MODELS[name]().to(device), CompressionConfig())
    return model, copy.deepcopy(model)  # the copy's seed stream starts where the model's does


def _train(model, data, steps, autocast=False):
    """SGD steps: Adam would divide float rounding by itself on parameters whose
    exact gradient is 0 (biases before BatchNorm), and eager sums a conv's root
    term in place where a compiled graph adds it, which rounds differently.
    ``autocast``: the forward under bf16 autocast."""
    x, edge_index, y = data
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        torch.manual_seed(step)  # the same dropout masks for both
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x, edge_index), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_graph_breaks(name):
    model, _ = _converted(name, "cpu")
    x, edge_index, _ = _data("cpu")
    explanation = torch._dynamo.explain(model)(x, edge_index)
    assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiled_training_equals_eager(name, device):
    """fullgraph=True: any break inside iexact's ops fails; aot_eager traces
    forward and backward as inductor does, without inductor's compile time."""
    model, twin = _converted(name, device)
    data = _data(device)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ours, theirs = _train(compiled, data, steps=3), _train(twin, data, steps=3)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiled_training_under_autocast_equals_eager(name):
    """Under bf16 autocast, one graph as without it, and the eager model's
    losses up to bf16 rounding (a compiled graph may fuse and round once
    where eager rounds twice)."""
    model, twin = _converted(name, "cpu")
    data = _data("cpu")
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ours, theirs = _train(compiled, data, 3, autocast=True), _train(twin, data, 3, autocast=True)
    torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=1e-2)


def test_inductor_trains_as_eager(device):
    model, twin = _converted("GraphSAGE", device)
    data = _data(device)
    ours, theirs = _train(torch.compile(model, fullgraph=True), data, steps=3), _train(twin, data, steps=3)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_torch_jit_script_is_refused_by_name():
    model, _ = _converted("GraphSAGE", "cpu")
    with pytest.raises(RuntimeError, match="torch.compile"):
        torch.jit.script(model)
