r"""Activation memory: the bytes autograd holds for backward, per layer.

:func:`activation_memory` runs one training forward under
``torch.autograd.graph.saved_tensors_hooks``, so it sees every tensor any
op saves, and attributes each to the innermost module running when it was
saved. Each storage counts once. Storage saved by iexact's own Functions
(:class:`~iexact.autograd.SavingFunction`: packed codes, scales, bit masks,
seeds) and the codes of the saved-tensor fallback (:mod:`iexact.nn.fallback`)
are *compressed*; anything else is *uncompressed*; storage the model
or the caller already holds (parameters, buffers, module caches, the
inputs) is reported apart, since it is not an activation.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from .autograd import SavingFunction
from .graph import storages, tensors_in
from .nn import original_class
from .nn.fallback import COMPRESSED_CODES

BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))


def format_bytes(nbytes: float, unit: str | None = None, digits: int = 2, exact: bool = False) -> str:
    """``nbytes`` as text in ``unit`` (``"B"``, ``"KiB"``, ``"MiB"`` or ``"GiB"``),
    by default the largest that keeps the number at least 1, thousands separated
    by commas: ``format_bytes(3 * 2**20)`` is ``"3.00 MiB"``; with ``exact``, the
    byte count first: ``"3,145,728 B (3.00 MiB)"``."""
    scales = dict(BYTE_UNITS)
    if unit is None:
        unit = next((name for name, scale in BYTE_UNITS if abs(nbytes) >= scale), "B")
    if unit not in scales:
        raise ValueError(f"unit={unit!r} is invalid: expected one of {', '.join(scales)}")
    text = f"{nbytes:,.0f} B" if unit == "B" else f"{nbytes / scales[unit]:,.{digits}f} {unit}"
    return f"{nbytes:,.0f} B ({text})" if exact and unit != "B" else text


@dataclasses.dataclass(frozen=True)
class LayerMemory:
    """Bytes one module kept for backward."""

    name: str
    kind: str
    compressed: int
    uncompressed: int

    @property
    def total(self) -> int:
        return self.compressed + self.uncompressed


@dataclasses.dataclass(frozen=True)
class SavedTensor:
    """One storage kept for backward: where it was saved and what it is."""

    layer: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int
    compressed: bool


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    r"""Bytes held for backward after one training forward.

    Attributes:
        layers: one :class:`LayerMemory` per module that kept anything, in
            forward order.
        saved: every storage counted, as :class:`SavedTensor` rows.
        held_elsewhere: bytes of saved storage that the model or caller
            already holds (parameters, buffers, caches, inputs); not counted
            in :attr:`total`.
    """

    layers: tuple[LayerMemory, ...]
    saved: tuple[SavedTensor, ...]
    held_elsewhere: int

    @property
    def compressed(self) -> int:
        return sum(layer.compressed for layer in self.layers)

    @property
    def uncompressed(self) -> int:
        return sum(layer.uncompressed for layer in self.layers)

    @property
    def total(self) -> int:
        return self.compressed + self.uncompressed

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        kinds = max([len(layer.kind) for layer in self.layers] + [4])
        lines = [f"{'layer':<{width}}  {'type':<{kinds}}  {'compressed':>14}  {'uncompressed':>14}"]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}  {layer.kind:<{kinds}}  {layer.compressed:>14,}  {layer.uncompressed:>14,}"
            )
        lines.append(f"{'total':<{width}}  {'':<{kinds}}  {self.compressed:>14,}  {self.uncompressed:>14,}")
        lines.append(
            f"activation memory {format_bytes(self.total, 'MiB', exact=True)}; "
            f"parameters, buffers and inputs also referenced: {self.held_elsewhere:,} B"
        )
        return "\n".join(lines)


def _held_by_model(model: torch.nn.Module) -> list:
    """Parameters, buffers and tensors modules keep as attributes (caches)."""
    held = list(model.parameters()) + list(model.buffers())
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, (torch.Tensor, tuple, list)):
                tensors_in(value, held)
    return held


def _compressedstorages(outputs: list) -> set:
    """Storage keys of the compressed storage iexact's Functions saved anywhere
    in the graph behind ``outputs``: the codes, scales and seeds of each
    :class:`~iexact.ops.codec.Stored` record, the packed bit masks and the
    generator snapshots (``uint8``), not what they keep as it is (a reference, an index, an
    exact statistic: uncompressed unless the model or the caller holds it)."""
    keys: set[tuple] = set()
    seen: set = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        forward_cls = getattr(type(node), "_forward_cls", None)
        if isinstance(forward_cls, type) and issubclass(forward_cls, SavingFunction):
            for tensor in _compressed_saved(node):
                keys.update(key for key, _ in storages(tensor))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return keys


def _compressed_saved(node) -> list[torch.Tensor]:
    """The saved tensors of a :class:`~iexact.autograd.SavingFunction`'s node
    that are compressed storage (see :func:`iexact.autograd.saving.save`'s layout)."""
    tensors, position = node.saved_tensors, 0
    found: list[torch.Tensor] = []
    for count, record in node.iexact_layout:
        held = tensors[position : position + count]
        position += count
        found += held if record is not None else [t for t in held if t.dtype == torch.uint8]
    return found


def activation_memory(model: torch.nn.Module, *inputs, **kwargs) -> MemoryReport:
    r"""Bytes ``model`` keeps for backward after one training forward on ``inputs``.

    Runs ``model(*inputs, **kwargs)`` once in training mode with autograd on
    (restoring the mode afterwards; the graph is discarded, no backward runs),
    and counts every storage autograd saved, once, in the innermost module
    that saved it. Works on compressed and uncompressed models alike (the
    latter is the FP32 baseline).

    Args:
        model (torch.nn.Module): the model.
        *inputs: the positional arguments to call it with.
        **kwargs: the keyword arguments to call it with.

    Returns:
        :class:`MemoryReport` with ``total``, ``compressed``,
        ``uncompressed``, per-layer rows, and ``print()``-able.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = {module: name or "(model)" for name, module in model.named_modules()}
    recorded, compressed_keys = _saved_in_forward(model, inputs, kwargs)
    held_keys = {
        key for tensor in _held_by_model(model) + tensors_in((inputs, kwargs), []) for key, _ in storages(tensor)
    }
    per_layer: dict[torch.nn.Module, list[int]] = {}
    saved, held_elsewhere = [], 0
    for key, (owner, nbytes, shape, dtype) in recorded.items():
        if key in held_keys:
            held_elsewhere += nbytes
            continue
        is_compressed = key in compressed_keys
        row = per_layer.setdefault(owner, [0, 0])
        row[0 if is_compressed else 1] += nbytes
        saved.append(SavedTensor(names[owner], shape, dtype, nbytes, is_compressed))
    layers = tuple(LayerMemory(names[m], original_class(m).__name__, c, u) for m, (c, u) in per_layer.items())
    return MemoryReport(layers, tuple(saved), held_elsewhere)


def _saved_in_forward(model: torch.nn.Module, inputs, kwargs) -> tuple[dict, set]:
    """``(recorded, compressed keys)`` of one training forward: per storage key
    the ``(innermost module, bytes, shape, dtype)`` of the first tensor saved in
    it, and the keys iexact's Functions saved (:func:`_compressed_storages`)."""
    recorded: dict[tuple, tuple[torch.nn.Module, int, tuple, torch.dtype]] = {}
    generic: set[tuple] = set()  # the codes the saved-tensor fallback keeps
    was_training = model.training
    model.train()
    with running_modules(model) as running:

        def pack(tensor):
            owner = running[-1] if running else model
            for key, nbytes in storages(tensor):
                recorded.setdefault(key, (owner, nbytes, tuple(tensor.shape), tensor.dtype))
                if COMPRESSED_CODES.get():
                    generic.add(key)
            # an alias without grad_fn: a node saving its own output would otherwise form a
            # reference cycle, and the measured graph would outlive this call until the next gc
            return tensor.detach()

        try:
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                outputs = tensors_in(model(*inputs, **kwargs), [])
        finally:
            model.train(was_training)
    return recorded, _compressedstorages(outputs) | generic


@contextlib.contextmanager
def running_modules(model: torch.nn.Module) -> Iterator[list[torch.nn.Module]]:
    """A list that holds, while the block runs, the stack of ``model``'s modules
    whose forward is running (innermost last), kept by forward (pre-)hooks
    that are removed on leaving the block. They only observe: a converted
    module runs as it would without them (see
    :func:`~iexact.nn.handler.has_forward_hooks`)."""
    running: list[torch.nn.Module] = []

    def enter(module, args) -> None:
        running.append(module)

    def leave(module, args, output) -> None:
        running.pop()

    enter.iexact_observer = leave.iexact_observer = True  # type: ignore[attr-defined]  # see has_forward_hooks
    handles = []
    for module in model.modules():
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield running
    finally:
        for handle in handles:
            handle.remove()


def allocator_growth(model: torch.nn.Module, *inputs, **kwargs) -> int:
    r"""Bytes the allocator holds more after one training forward than before,
    less the output's own bytes: what the graph keeps, measured by the
    allocator itself (CUDA ``memory_allocated``; on CPU the net allocations
    ``torch.profiler`` records). Unlike :func:`activation_memory` it also sees
    what is kept outside autograd's saved tensors (``torch.utils.checkpoint``
    keeps its inputs that way), but cannot say what is compressed.

    On CPU the profiler's Kineto backend prints two ``USDT`` lines per start
    unless the environment sets ``KINETO_LOG_LEVEL=6``; the library leaves the
    environment to its owner (the ``iexact`` command sets it for its own process)."""
    tensors = tensors_in((inputs, kwargs), [])
    on_cuda = any(t.is_cuda for t in tensors)
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad():
            if on_cuda:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                out = tensors_in(model(*inputs, **kwargs), [])
                torch.cuda.synchronize()
                grown = torch.cuda.memory_allocated() - before
            else:
                activities = [torch.profiler.ProfilerActivity.CPU]
                with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
                    out = tensors_in(model(*inputs, **kwargs), [])
                grown = sum(event.self_cpu_memory_usage for event in profile.events())
    finally:
        model.train(was_training)
    return grown - sum(t.untyped_storage().nbytes() for t in out)
