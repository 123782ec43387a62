"""A converted GCN normalizes each graph once per forward and once per backward, whatever its depth,
with the gradients of one normalization per layer."""

import copy

import pytest
import torch
from torch_geometric.nn import GCN, GCNConv

import iexact
import iexact.ops.graph
from iexact.nn.shared_graphs import unwatch_shared_graphs_

from .forms import edges

CONFIG = iexact.CompressionConfig()


@pytest.fixture
def normalizations(monkeypatch):
    """How many times ``iexact::gcn_norm`` ran."""
    calls = []
    original = iexact.ops.graph.gcn_norm

    def counted(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(iexact.ops.graph, "gcn_norm", counted)
    return calls


class TwoGraphs(torch.nn.Module):
    """Three GCNConvs reading two graphs of the same shape: a, b, a."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(GCNConv(6, 6) for _ in range(3))

    def forward(self, x, first, second):
        for conv, graph in zip(self.convs, (first, second, first), strict=True):
            x = conv(x, graph).relu()
        return x


def _gradients(model, *inputs, backwards: int = 1):
    torch.manual_seed(0)
    x = torch.randn(30, 6, requires_grad=True)
    out = model(x, *inputs)
    grad = torch.randn_like(out)
    for _ in range(backwards):
        out.backward(grad, retain_graph=True)
    return [x.grad, *(p.grad for p in model.parameters())]


def _pair(model):
    """``model`` compressed twice, the second without sharing (the same seeds)."""
    shared = iexact.compress_(model, CONFIG)
    alone = copy.deepcopy(shared)
    unwatch_shared_graphs_(alone)
    return shared, alone


@pytest.mark.parametrize("backwards", [1, 2])
def test_a_deep_gcn_normalizes_once_per_forward_and_backward(normalizations, backwards):
    torch.manual_seed(1)
    shared, alone = _pair(GCN(6, 6, num_layers=4))
    graph = edges(30, 30)
    expected = _gradients(alone, graph, backwards=backwards)
    assert len(normalizations) == 4 * (1 + backwards)
    normalizations.clear()
    got = _gradients(shared, graph, backwards=backwards)
    assert len(normalizations) == 1 + backwards
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_two_graphs_of_one_shape_are_not_confused(normalizations):
    torch.manual_seed(1)
    shared, alone = _pair(TwoGraphs())
    first, second = edges(30, 30), edges(30, 30, seed=1)
    assert not torch.equal(first, second)
    expected = _gradients(alone, first, second)
    normalizations.clear()
    got = _gradients(shared, first, second)
    assert len(normalizations) == 4  # each graph once in forward, once in backward
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def _nodes(out):
    seen, stack = [], [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and all(node is not other for other in seen):
            seen.append(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


def test_nothing_is_held_between_forward_and_backward():
    torch.manual_seed(1)
    model = iexact.compress_(GCN(6, 6, num_layers=3), CONFIG)
    out = model(torch.randn(30, 6, requires_grad=True), edges(30, 30))
    shared = [node.shared for node in _nodes(out) if getattr(node, "shared", None) is not None]
    assert len(shared) == 3 and shared[0] is shared[1] is shared[2]
    assert shared[0].value is None and shared[0].readers == 3
