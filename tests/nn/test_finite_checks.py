"""The finite check read once per forward of a converted model (the one
host sync of a step is proved on meta tensors in ``tests/kernels/test_kernels.py``)."""

import pickle

import pytest
import torch
from torch_geometric.nn.models import GraphSAGE

import iexact
from iexact.codec import NonFiniteError
from iexact.nn import finite_checks
from iexact.ops.codec import FINITE_CHECKS

NODES, FEATURES = 60, 8


def _model():
    torch.manual_seed(0)
    return iexact.compress_(GraphSAGE(FEATURES, 16, 2, 3), iexact.CompressionConfig())


def _inputs(poisoned: bool = False):
    x = torch.randn(NODES, FEATURES, generator=torch.Generator().manual_seed(1))
    if poisoned:
        x[7, 2] = float("inf")
    return x, torch.randint(0, NODES, (2, 300), generator=torch.Generator().manual_seed(2))


def test_a_non_finite_activation_stops_the_forward_naming_the_tensor():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    # the input itself is the caller's (kept by reference): the first tensor compressed is the first layer's output
    with pytest.raises(NonFiniteError, match=r"cannot compress a tensor of shape \(60, 16\): it holds NaN or Inf"):
        model(*_inputs(poisoned=True))
    assert FINITE_CHECKS.get() is None  # the collection closed
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model(*_inputs()).sum().backward()  # and the next forward is checked afresh


def test_a_converted_module_called_alone_checks_each_compression():
    conv = _model().convs[1]  # outside its model's forward: no collection open
    hidden = torch.randn(NODES, 16, requires_grad=True)
    with torch.no_grad():
        hidden[3, 3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"shape \(60, 16\): it holds NaN or Inf"):
        conv(hidden * 1.0, _inputs()[1])  # an intermediate, so compressed


def test_eval_and_no_grad_compress_nothing_and_check_nothing():
    model = _model().eval()
    out = model(*_inputs(poisoned=True))  # the stock forward: NaN flows through, as without iexact
    assert not out.isfinite().all()
    with torch.no_grad():
        model.train()(*_inputs(poisoned=True))


def test_another_error_in_the_forward_is_raised_as_it_is():
    model = _model()
    with pytest.raises(RuntimeError, match="size|shape|index"):
        model(torch.randn(NODES, FEATURES + 1), _inputs()[1])
    assert FINITE_CHECKS.get() is None


def test_an_inner_converted_model_leaves_the_read_to_the_outer_one(monkeypatch):
    outer = iexact.compress_(_Wrapper(_model()), iexact.CompressionConfig())
    finished = []
    original = finite_checks.finish_finite_checks
    monkeypatch.setattr(finite_checks, "finish_finite_checks", lambda *a, **k: finished.append(1) or original(*a, **k))
    outer(*_inputs()).sum().backward()
    assert finished == [1]
    with pytest.raises(NonFiniteError, match="holds NaN or Inf"):
        outer(*_inputs(poisoned=True))


class _Wrapper(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, edge_index):
        return self.inner(x, edge_index)


def test_restore_removes_the_hooks_and_compress_adds_them_once():
    model = _model()
    iexact.compress_(model, iexact.CompressionConfig(bits=4))
    # ours, iexact.nn.held's, shared_graphs' and model_code's
    assert len(model._forward_pre_hooks) == 4 and len(model._forward_hooks) == 4
    iexact.nn.restore_(model)
    assert not model._forward_pre_hooks and not model._forward_hooks and not model._forward_hooks_always_called


def test_a_pickled_model_keeps_checking_once_per_forward():
    model = pickle.loads(pickle.dumps(_model()))
    with pytest.raises(NonFiniteError, match="holds NaN or Inf"):
        model(*_inputs(poisoned=True))
