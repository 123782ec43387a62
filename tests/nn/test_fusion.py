"""An activation whose output only a BasicGNN's dropout takes leaves it its
derivative: the same gradients bit for bit, half the sign bits at p = 0.5."""

import copy

import pytest
import torch
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

import iexact
from iexact import CompressionConfig

from .forms import edges, features

N, F_IN = 60, 12


def _models():
    return {
        "GraphSAGE relu": GraphSAGE(F_IN, 16, 3, 5, norm="batch", dropout=0.5),
        "GCN leaky_relu": GCN(F_IN, 16, 3, 5, act="leaky_relu", dropout=0.3, jk="cat"),
        "GAT relu, dropout 0": GAT(F_IN, 16, 2, 5, dropout=0.0),
    }


def _gradients(model, x, edge_index):
    torch.manual_seed(5)
    leaf = x.detach().clone().requires_grad_()
    model.zero_grad()
    out = model(leaf, edge_index)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    return [out, leaf.grad, *(p.grad for p in model.parameters() if p.grad is not None)]


@pytest.mark.parametrize("name", list(_models()))
def test_fused_models_compute_the_unfused_gradients_bit_for_bit(name):
    torch.manual_seed(0)
    model = iexact.compress_(_models()[name], CompressionConfig())
    unfused = copy.deepcopy(model)
    unfused.act.iexact_before_dropout = False
    assert model.act.iexact_before_dropout
    x, edge_index = features(N, F_IN), edges()
    for ours, theirs in zip(_gradients(model, x, edge_index), _gradients(unfused, x, edge_index), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("masks", ["seed", "bits"])
def test_the_relu_keeps_nothing_and_dropout_the_kept_signs_or_one_bit(masks):
    torch.manual_seed(0)
    model = iexact.compress_(GraphSAGE(F_IN, 64, 3, 5, dropout=0.5), CompressionConfig(dropout_masks=masks))
    unfused = copy.deepcopy(model)
    unfused.act.iexact_before_dropout = False
    x, edge_index = features(2000, F_IN), edges(2000, 2000, 8000)
    fused, full = (
        {layer.name: layer.compressed for layer in iexact.activation_memory(m, x, edge_index).layers}
        for m in (model, unfused)
    )
    assert "act" not in fused and full["act"] == 2 * 2000 * 64 // 8  # two hidden layers, one bit each
    if masks == "bits":  # the one bit "kept and positive", where unfused the dropout keeps its mask's bits
        assert fused["dropout"] == full["dropout"] == full["act"]
        return
    signs = fused["dropout"] - full["dropout"]  # beyond the generator snapshots both keep
    assert 0.5 * full["act"] < signs < 0.53 * full["act"]


def _linked(model) -> bool:
    return any(getattr(m, "iexact_before_dropout", False) for m in model.modules())


def test_only_pygs_own_forward_with_the_activation_straight_into_dropout_is_linked():
    class OwnForward(GraphSAGE):
        def forward(self, x, edge_index):
            return super().forward(x, edge_index)

    unlinked = {
        "act first": GraphSAGE(F_IN, 16, 2, 5, act_first=True, dropout=0.5),
        "GIN (its MLPs share the activation)": GIN(F_IN, 16, 2, 5, dropout=0.5),
        "a forward of its own": OwnForward(F_IN, 16, 2, 5, dropout=0.5),
        "tanh": GraphSAGE(F_IN, 16, 2, 5, act="tanh", dropout=0.5),
    }
    for name, model in unlinked.items():
        assert not _linked(iexact.compress_(model, CompressionConfig())), name
    excluded = iexact.compress_(
        GraphSAGE(F_IN, 16, 2, 5, dropout=0.5), CompressionConfig(), filter_fn=lambda m, name: name != "dropout"
    )
    assert not _linked(excluded)
    hooked = GraphSAGE(F_IN, 16, 2, 5, dropout=0.5)
    hooked.dropout.register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    assert not _linked(iexact.compress_(hooked, CompressionConfig()))
    restored = iexact.nn.restore_(iexact.compress_(GraphSAGE(F_IN, 16, 2, 5, dropout=0.5), CompressionConfig()))
    assert "iexact_before_dropout" not in vars(restored.act)


@pytest.mark.parametrize("setting", ["forward hook on act", "dropout in eval", "dropout p=1"])
def test_a_linked_pair_falls_back_where_the_dropout_cannot_keep_the_signs(setting):
    """A hook on the activation sees its output (it keeps its own signs); a
    dropout that does not drop applies the derivative itself."""
    torch.manual_seed(0)
    model = iexact.compress_(GraphSAGE(F_IN, 16, 3, 5, dropout=0.5), CompressionConfig())
    unfused = copy.deepcopy(model)
    unfused.act.iexact_before_dropout = False
    for m in (model, unfused):
        if setting == "forward hook on act":
            m.act.register_forward_hook(lambda module, args, out: None)
        elif setting == "dropout in eval":
            m.dropout.eval()
        else:
            m.dropout.p = 1.0
    x, edge_index = features(N, F_IN), edges()
    for ours, theirs in zip(_gradients(model, x, edge_index), _gradients(unfused, x, edge_index), strict=True):
        assert torch.equal(ours, theirs)


def test_an_activation_output_that_bypasses_the_dropout_is_refused_in_backward():
    model = iexact.compress_(GraphSAGE(F_IN, 16, 2, 5, dropout=0.5), CompressionConfig())
    model.dropout.register_forward_pre_hook(lambda module, args: (args[0] * 2,))  # after compress_
    out = model(features(N, F_IN), edges())
    with pytest.raises(RuntimeError, match="without passing that dropout"):
        out.sum().backward()
