r"""The saved-tensor fallback: a module no handler compresses keeps what autograd saves compressed.

A module without a handler (a user's own layer, ``TransformerConv``), or
whose handler does not compress its setting (``SAGEConv(aggr="max")``), runs
its own forward inside ``torch.autograd.graph.saved_tensors_hooks``: every
floating-point tensor autograd saves for it, of at least
:data:`FALLBACK_MIN_BYTES`, is kept compressed with the module's config
(:data:`DEFAULT_FALLBACK`: 8 bits, blocks of 128, no projection), each view
once; the rest is kept as autograd keeps it:

- parameters and buffers (the model holds them), and the module's own inputs
  that no op of the graph made (the caller holds them, such as ``data.x``);
- integer and boolean tensors (indices, masks);
- what iexact's codec made (a converted child's codes and scales, compressed
  already: a converted child compresses with its own config even a tensor
  made inside this module without a gradient, which it would otherwise keep
  as the caller's, :data:`~iexact.autograd.saving.CALLER_HELD`);
- what a torch call whose backward compares the saved values saves (max and
  min reductions, ``scatter_reduce`` with ``amax``/``amin``/``prod``, sort,
  top-k, pooling by maximum, clamp and the piecewise activations): rounding
  those would move the gradient to other elements, not perturb it. The call
  is known from a ``TorchFunctionMode`` around the forward, which sees each
  torch call the module's Python code makes (:data:`COMPARING`). Of those,
  ReLU and LeakyReLU read only the sign: one bit per element (:data:`SIGN_ONLY`),
  and the scatter maximum and minimum of PyG's max and min aggregation run
  as :class:`~iexact.autograd.ScatterExtremumFunction`, which keeps one bit
  per element saying where the extremum is;
- a tensor holding NaN or Inf (it cannot be quantized).

The hooks chain to those active around the forward (such as
:func:`iexact.activation_memory`'s), which see the codes as compressed.

A saved tensor's backward need not be linear in it (``softmax``'s and
``tanh``'s are not), so the fallback's gradient may be biased where a
handler's is not: by little at 8 bits (the documentation's results page
measures it). Under ``torch.compile`` the module runs eagerly between compiled
graphs (``fullgraph=True`` refuses it, naming the fallback).
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref

import torch
from torch.overrides import TorchFunctionMode

from ..autograd import ScatterExtremumFunction
from ..autograd.saving import CALLER_HELD
from ..codec import NonFiniteError
from ..config import CompressionConfig
from ..graph import storages, tensors_in
from ..ops import codec as codec_ops
from ..quant import pack_mask, unpack_mask
from ..seeds import SeedStream
from .handler import CompressedModule

DEFAULT_FALLBACK = CompressionConfig(bits=8, rp_ratio=1)
"""The fallback's config unless ``compress_(..., fallback=...)`` names another."""
FALLBACK_MIN_BYTES = 2**16  # smaller saved tensors are kept as they are

# torch calls whose backward routes the gradient by comparing the values they save
COMPARING = frozenset(
    {
        "max", "min", "amax", "amin", "aminmax", "maximum", "minimum", "fmax", "fmin",
        "sort", "msort", "topk", "kthvalue", "median", "nanmedian", "mode", "cummax", "cummin",
        "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
        "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
        "fractional_max_pool2d", "fractional_max_pool3d", "max_unpool1d", "max_unpool2d", "max_unpool3d",
        "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max", "hardtanh", "hardtanh_", "relu6",
        "relu", "relu_", "leaky_relu", "leaky_relu_", "threshold", "threshold_", "rrelu", "elu", "elu_",
        "selu", "celu", "hardshrink", "softshrink", "hardsigmoid", "hardswish", "abs", "sign", "prod",
    }
)  # fmt: skip
_COMPARING_REDUCTIONS = frozenset({"amax", "amin", "prod"})  # of scatter_reduce and index_reduce
# of those, the calls whose backward reads only the sign of what they save: kept as 1 bit per element
SIGN_ONLY = frozenset({"relu", "relu_", "leaky_relu", "leaky_relu_"})

# set while the fallback hands compressed codes to an outer pack hook (iexact.activation_memory reads it)
COMPRESSED_CODES: contextvars.ContextVar[bool] = contextvars.ContextVar("iexact_compressed_codes", default=False)


def compares(func, args: tuple, kwargs: dict) -> bool:
    """Whether the torch call ``func(*args, **kwargs)`` saves values its backward compares."""
    name = getattr(func, "__name__", "")
    if name in COMPARING:
        return True
    if name.rstrip("_") in ("scatter_reduce", "index_reduce"):
        return _reduction(args, kwargs) in _COMPARING_REDUCTIONS
    return False


def _reduction(args: tuple, kwargs: dict) -> str | None:
    """The ``reduce`` of a ``scatter_reduce``/``index_reduce`` call (``self, dim, index, src, reduce``)."""
    return kwargs.get("reduce", args[4] if len(args) > 4 else None)


class _Calls(TorchFunctionMode):
    """Watches the torch calls of a forward (the mode steps aside inside a call,
    so only the outermost is seen): ``comparing`` is the name of the one running
    now whose backward compares saved values (``None`` if none), ``codes``
    holds the storages iexact's codec made (a converted child's codes and scales)."""

    def __init__(self):
        super().__init__()
        self.comparing: str | None = None
        self.codes: set[tuple] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.iexact.compress.default:
            out = func(*args, **kwargs)
            self.codes.update(_storage_key(part) for part in out)
            return out
        extremum = _scatter_extremum(func, args, kwargs)
        if extremum is not None:
            return extremum
        if not compares(func, args, kwargs):
            return func(*args, **kwargs)
        self.comparing = func.__name__
        try:
            return func(*args, **kwargs)
        finally:
            self.comparing = None


def _scatter_extremum(func, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """``scatter_reduce`` (or ``scatter_reduce_``) to a maximum or minimum without
    ``include_self``, as PyG's max and min aggregations call it, through
    :class:`~iexact.autograd.ScatterExtremumFunction` (one bit per source
    element kept, torch's gradient bit for bit); ``None`` for any other call."""
    name = getattr(func, "__name__", "")
    if name not in ("scatter_reduce", "scatter_reduce_") or len(args) < 4:
        return None
    out, dim, index, src = args[:4]
    reduce = _reduction(args, kwargs)
    include_self = kwargs.get("include_self", args[5] if len(args) > 5 else True)
    if (
        reduce not in ("amax", "amin")
        or include_self
        or not torch.is_grad_enabled()
        or not isinstance(src, torch.Tensor)
        or not src.requires_grad
        or out.requires_grad
    ):
        return None
    return ScatterExtremumFunction.apply(out if name.endswith("_") else out.clone(), dim, index, src, reduce)


class _Saved:
    """The pack and unpack hooks of one forward of a fallback module, chained
    to the hooks active around it (an outer pack sees every tensor kept,
    compressed codes included)."""

    def __init__(
        self, config: CompressionConfig, seeds: SeedStream, module: torch.nn.Module, inputs: tuple, calls: _Calls
    ):
        self.config, self.seeds, self.calls = config, seeds, calls
        self._sources: tuple | None = (module, inputs, CALLER_HELD.get())
        self._held: set | None = None
        self.outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
        # each view compressed once: (storage, offset, shape, stride, version) -> (the tensor, weakly; its record)
        self.packed: dict[tuple, tuple[weakref.ref, tuple]] = {}

    @property
    def held(self) -> set:
        """The storage keys kept by reference: the module's parameters and
        buffers, and the inputs it reads that its caller holds (an input leaf
        made during the model's forward is no caller's); collected when first asked."""
        if self._held is None:
            assert self._sources is not None
            module, inputs, outer = self._sources
            own = {key for tensor in (*module.parameters(), *module.buffers()) for key, _ in storages(tensor)}
            read = {key for t in tensors_in(inputs) if t.grad_fn is None for key, _ in storages(t)}
            self._held = own | {key for key in read if outer is None or key in outer}
            self._sources = None  # nothing kept beyond the keys
        return self._held

    def close(self) -> None:
        """The forward has ended: nothing more is packed. These hooks live as long as
        the graph, so what only packing needed is let go: the inputs (one made in
        the forward must not outlive it here) and the record of what was packed."""
        self._sources = None
        if self._held is None:
            self._held = set()
        self.packed.clear()

    def pack(self, tensor: torch.Tensor):
        if COMPRESSED_CODES.get() or not self._compressible(tensor):
            return ("kept", self._outer_pack(tensor))
        if self.calls.comparing in SIGN_ONLY:
            return ("signs", self._codes(pack_mask(tensor > 0)), tensor.shape, tensor.dtype)
        if self.calls.comparing is not None:
            return ("kept", self._outer_pack(tensor))
        key = (_storage_key(tensor), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor._version)
        known = self.packed.get(key)
        if known is not None and known[0]() is not None:  # the same tensor alive: not a reused address
            return known[1]
        try:
            stored = codec_ops.compress(tensor.detach(), self.config, self.seeds.state)
        except NonFiniteError:
            return ("kept", self._outer_pack(tensor))
        record = ("compressed", stored._replace(tensors=self._codes(*stored.tensors)), tensor.stride())
        self.packed[key] = (weakref.ref(tensor), record)
        return record

    def unpack(self, packed) -> torch.Tensor:
        if packed[0] == "kept":
            return self._outer_unpack(packed[1])
        if packed[0] == "signs":
            _, (signs,), shape, dtype = packed
            return unpack_mask(self._outer_unpack(signs), shape).to(dtype)
        _, stored, stride = packed
        out = codec_ops.decompress(stored._replace(tensors=tuple(self._outer_unpack(t) for t in stored.tensors)))
        if out.stride() != stride and _dense(out.shape, stride):
            out = torch.empty_strided(out.shape, stride, dtype=out.dtype, device=out.device).copy_(out)
        return out

    def _compressible(self, tensor: torch.Tensor) -> bool:
        return (
            tensor.is_floating_point()
            and tensor.layout == torch.strided
            and tensor.numel() * tensor.element_size() >= FALLBACK_MIN_BYTES
            and _storage_key(tensor) not in self.held
            and _storage_key(tensor) not in self.calls.codes
        )

    def _codes(self, *tensors: torch.Tensor) -> tuple:
        """``tensors``, the fallback's own compressed form, handed to the outer pack as such."""
        token = COMPRESSED_CODES.set(True)
        try:
            return tuple(self._outer_pack(part) for part in tensors)
        finally:
            COMPRESSED_CODES.reset(token)

    def _outer_pack(self, tensor):
        return tensor if self.outer is None else self.outer[0](tensor)

    def _outer_unpack(self, packed):
        return packed if self.outer is None else self.outer[1](packed)


def _storage_key(tensor: torch.Tensor) -> tuple:
    """The key of a strided ``tensor``'s storage, as :func:`iexact.graph.storages` gives it."""
    ((key, _),) = storages(tensor)
    return key


def _dense(shape, stride) -> bool:
    """Whether ``stride`` lays ``shape`` out without gaps or overlaps (a permutation of a contiguous layout)."""
    expected = 1
    for size, step in sorted(zip(shape, stride, strict=True), key=lambda pair: pair[1]):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True


@contextlib.contextmanager
def compressed_saving(module: CompressedModule, inputs: tuple):
    """Run the block with what autograd saves for ``module`` compressed (see the module docstring)."""
    calls = _Calls()
    saved = _Saved(module.iexact_config, module.iexact_seeds, module, inputs, calls)
    token = CALLER_HELD.set(frozenset(saved.held))
    try:
        with calls, torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            yield
    finally:
        CALLER_HELD.reset(token)
        saved.close()


_NOT_TRACED = (
    "iexact's saved-tensor fallback keeps what autograd saves compressed through saved-tensor hooks, which "
    "torch.compile does not trace: the module runs eagerly between compiled graphs (fullgraph=True refuses it); "
    "compress_(model, config, fallback=None) or filter_fn leaves it uncompressed"
)


class FallbackHandler(CompressedModule):
    """Any module: its own forward, with what autograd saves for it compressed
    (:mod:`iexact.nn.fallback`).

    Stores: its saved floating-point tensors of at least 64 KiB compressed
    (8 bits by default), the rest as autograd keeps it.
    """

    @torch.compiler.disable(reason=_NOT_TRACED)
    def forward(self, *args, **kwargs):
        if not self._compressing():
            return super().forward(*args, **kwargs)
        with compressed_saving(self, (*args, *kwargs.values())):
            return super().forward(*args, **kwargs)
