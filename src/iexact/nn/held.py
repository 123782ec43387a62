r"""What the caller of a converted model holds, published for the length of its forward.

A compressed Function keeps a tensor argument by reference, without a byte,
when the caller holds it anyway (:func:`iexact.autograd.saving.pack`): the
model's own inputs (``data.x``), parameters and buffers. Any other tensor
without a ``grad_fn`` was made during the forward from inputs that need no
gradient (GPSConv's ``to_dense_batch`` of ``data.x``, a functional dropout
of it) and would live on only through that reference: it must be
compressed. :func:`watch_held_` hooks the model :func:`~iexact.compress_`
converted so that, while its forward runs,
:data:`~iexact.autograd.saving.CALLER_HELD` holds the storages of its
inputs, parameters and buffers (computed when first asked). A converted
module called on its own, outside the model's forward, keeps every leaf
argument by reference as before; a converted model inside another's forward
leaves the set to the outer one; a compiled graph reads no ContextVar, so
the hooks return at once under ``torch.compile``.
"""

from __future__ import annotations

import torch

from ..autograd.saving import CALLER_HELD
from ..graph import storages, tensors_in
from .handler import hook_forward_, keep_token, take_token, unhook_forward_

_TOKEN = "iexact_held_token"  # the instance attribute holding the ContextVar token of an open forward


class HeldStorages:
    """The storage keys (:func:`iexact.graph.storages`) of ``model``'s parameters
    and buffers and of the tensors in ``inputs``, collected on the first
    membership test (most forwards keep no leaf argument by reference)."""

    def __init__(self, model: torch.nn.Module, inputs: tuple):
        self.model: torch.nn.Module | None = model
        self.inputs: tuple | None = inputs
        self.keys: frozenset | None = None

    def __contains__(self, key) -> bool:
        if self.keys is None:
            assert self.model is not None
            tensors = [*self.model.parameters(), *self.model.buffers(), *tensors_in(self.inputs)]
            self.keys = frozenset(entry for tensor in tensors for entry, _ in storages(tensor))
            self.model = self.inputs = None  # nothing kept beyond the keys
        return key in self.keys


def _begin(module: torch.nn.Module, args, kwargs) -> None:
    if torch.compiler.is_compiling() or CALLER_HELD.get() is not None:
        return
    keep_token(module, _TOKEN, CALLER_HELD.set(HeldStorages(module, (args, kwargs))))


def _end(module: torch.nn.Module, args, kwargs, output) -> None:
    token = take_token(module, _TOKEN)
    if token is not None:
        CALLER_HELD.reset(token)


def watch_held_(model: torch.nn.Module) -> None:
    """Hook ``model``'s forward to publish what its caller holds (once)."""
    hook_forward_(model, _begin, _end, with_kwargs=True)


def unwatch_held_(model: torch.nn.Module) -> None:
    """Remove the hooks :func:`watch_held_` added."""
    unhook_forward_(model, _begin, _end)
