"""Counters for the CUDA path run on CPU tensors (``IEXACT_KERNELS=triton``,
``TRITON_INTERPRET=1``): kernel launches, and the bytes every op and kernel
reads and writes."""

import collections
import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

triton_quant = pytest.importorskip("iexact.kernels.triton_quant")
triton_codec = pytest.importorskip("iexact.kernels.triton_codec")

# jitted kernel -> (module, which way it goes)
KERNELS = {
    "_compress_kernel": (triton_codec, "compress"),
    "_decompress_kernel": (triton_codec, "decompress"),
    "_compress_dense_kernel": (triton_codec, "compress"),
    "_decompress_dense_kernel": (triton_codec, "decompress"),
    "_transpose_products_kernel": (triton_codec, "decompress"),
    "_quantize_pack_kernel": (triton_quant, "compress"),
    "_unpack_dequantize_kernel": (triton_quant, "decompress"),
}


class RecordedKernel:
    """A jitted kernel that tells ``record(name, tensors)`` of every launch, then
    launches inside ``around()`` (a context manager)."""

    def __init__(self, name, kernel, record, around):
        self.name, self.kernel, self.record, self.around = name, kernel, record, around

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def recorded(*args, **kwargs):
            self.record(self.name, [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)])
            with self.around():
                return launch(*args, **kwargs)

        return recorded


def record_kernels(monkeypatch, record, around=contextlib.nullcontext) -> None:
    """Send every launch of iexact's Triton kernels through ``record(name, tensors)``."""
    for name, (module, _) in KERNELS.items():
        monkeypatch.setattr(module, name, RecordedKernel(name, getattr(module, name), record, around))


@pytest.fixture
def launches(monkeypatch):
    """Force the Triton kernels and count their launches, by kernel name and by
    way (``"compress"``: the fused kernel or quantize/pack; ``"decompress"``)."""
    if torch.cuda.is_available():
        pytest.skip("with a GPU, Triton is not interpreted and the CUDA path is the default one")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    counts = collections.Counter()

    def count(name, tensors):
        counts[name] += 1
        counts[KERNELS[name][1]] += 1

    record_kernels(monkeypatch, count)
    return counts


def _moves_no_data(func) -> bool:
    """Views and allocations: on a GPU they launch nothing and move no byte."""
    name = func.__name__.split(".")[0]
    return func.is_view or name in ("empty", "empty_strided", "new_empty", "new_empty_strided", "detach")


class Traffic(TorchDispatchMode):
    """Bytes read and written, and kernels launched, by every torch op (its
    tensor inputs and outputs, whole) and every Triton launch (its tensor
    arguments, whole) in the mode: an upper bound on what the GPU would move,
    since a kernel is counted as touching every byte of every tensor it is given."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.bytes = 0
        self.launched: list[str] = []
        self._in_kernel = False  # the interpreter's own copies of a kernel's arguments are not the GPU's
        record_kernels(monkeypatch, self._kernel, self._inside)

    def _kernel(self, name, tensors):
        self.bytes += sum(t.nbytes for t in tensors)
        self.launched.append(name)

    @contextlib.contextmanager
    def _inside(self):
        self._in_kernel = True
        try:
            yield
        finally:
            self._in_kernel = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self._in_kernel and not _moves_no_data(func):
            leaves = torch.utils._pytree.tree_leaves((args, kwargs, out))
            self.bytes += sum(t.nbytes for t in leaves if isinstance(t, torch.Tensor))
            self.launched.append(func.__name__)
        return out

    def reset(self):
        self.bytes, self.launched = 0, []
