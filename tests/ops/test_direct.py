"""Operators called directly in plain eager code, through ``torch.library`` otherwise."""

import contextlib

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from iexact import CompressionConfig
from iexact.ops import codec as codec_ops
from iexact.ops.direct import plain_eager
from iexact.seeds import SeedStream


class _Operators(TorchDispatchMode):
    """Records the operators dispatched."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


class _Passing(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_plain_eager_only_without_modes_tracing_or_subclasses():
    x = torch.randn(3)
    assert plain_eager(x, None)
    with _Operators():
        assert not plain_eager(x)
    with _Passing():
        assert not plain_eager(x)
    with FakeTensorMode() as fake:
        assert not plain_eager(fake.from_tensor(x))

    class Sub(torch.Tensor):
        pass

    assert not plain_eager(x.as_subclass(Sub))
    assert not torch.compile(lambda t: torch.tensor(plain_eager(t)), fullgraph=True)(x)


class _Spy:
    """An operator that records how it was called: dispatched, or its implementation directly."""

    def __init__(self, operator, calls: list):
        self.operator, self.calls = operator, calls

    def __call__(self, *args):
        self.calls.append("dispatched")
        return self.operator(*args)

    def _init_fn(self, *args):
        self.calls.append("direct")
        return self.operator._init_fn(*args)


def test_the_direct_call_is_the_operators_implementation(monkeypatch):
    """Without a mode the implementations run directly, under a dispatch mode
    the operators are dispatched (and seen by the mode): the same codes,
    scales and restored tensor for the same seed stream."""
    calls = []
    for name in ("_compress", "_decompress"):
        monkeypatch.setattr(codec_ops, name, _Spy(getattr(codec_ops, name), calls))
    x, config = torch.randn(300, 64), CompressionConfig()
    results = []
    for mode in (None, _Operators()):
        with mode or contextlib.nullcontext():
            stored = codec_ops.compress(x, config, SeedStream(7).state)
            restored = codec_ops.decompress(stored)
        results.append((stored.tensors, restored))
    assert calls == ["direct", "direct", "dispatched", "dispatched"]
    assert "iexact.compress.default" in mode.names and "iexact.decompress.default" in mode.names
    (direct, direct_restored), (dispatched, dispatched_restored) = results
    assert all(torch.equal(a, b) for a, b in zip(direct, dispatched, strict=True))
    assert torch.equal(direct_restored, dispatched_restored)
