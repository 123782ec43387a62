"""What the caller holds: the model's inputs, parameters and buffers are kept by reference; a leaf made
during its forward from inputs without gradient is compressed."""

import dataclasses

import torch

import iexact
from iexact.autograd.saving import CALLER_HELD
from iexact.graph import storages

CONFIG = dataclasses.replace(iexact.CompressionConfig(), bits=8, rp_ratio=1)


class Padded(torch.nn.Module):
    """A stock container making a leaf from its input (as GPSConv's ``to_dense_batch``) for a Linear."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.lin(torch.cat([x, torch.zeros(2, 8)]))


class Direct(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.lin(x)


def test_a_leaf_made_during_the_forward_is_compressed():
    model = iexact.compress_(Padded(), CONFIG)
    report = iexact.activation_memory(model, torch.randn(30, 8))  # no gradient: the padded input is a leaf
    assert [row.nbytes for row in report.saved if row.dtype == torch.uint8] == [32 * 8]  # 8-bit codes
    assert report.uncompressed == 0 and report.held_elsewhere == model.lin.weight.nbytes  # for dX


def test_the_models_own_input_is_kept_by_reference():
    model = iexact.compress_(Direct(), CONFIG)
    x = torch.randn(30, 8)
    report = iexact.activation_memory(model, x)
    assert report.compressed == report.uncompressed == 0
    assert report.held_elsewhere == x.nbytes + model.lin.weight.nbytes


def test_a_converted_module_called_on_its_own_keeps_its_leaf_argument_by_reference():
    model = iexact.compress_(Direct(), CONFIG)
    x = torch.randn(30, 8)
    seen = []
    model.lin.register_forward_pre_hook(lambda module, args: seen.append(CALLER_HELD.get()))
    model.lin(x)
    model(x)
    ((key, _),) = storages(x)
    assert seen[0] is None and key in seen[1]
    assert CALLER_HELD.get() is None  # reset after the model's forward


def test_restore_removes_the_hooks_and_compressing_twice_adds_them_once():
    model = Direct()
    iexact.compress_(model, CONFIG)
    iexact.compress_(model, CONFIG)
    assert len(model._forward_pre_hooks) == 4  # the finite checks', the shared graphs', the model code's and ours
    iexact.nn.restore_(model)
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_a_forward_that_raises_resets_the_set():
    model = iexact.compress_(Direct(), CONFIG)
    try:
        model(torch.randn(3, 5))  # wrong width
    except RuntimeError:
        pass
    assert CALLER_HELD.get() is None
