r"""A graph's GCN normalization, computed once per forward and once per backward.

A compressed GCN layer keeps nothing of :math:`\hat D^{-1/2} \hat A \hat
D^{-1/2}` for backward (its :math:`E + N` weights and self-looped indices
would outweigh the compressed activations): it normalizes the caller's graph
in forward and again in backward. Every layer of a model reading the same
graph would do the same, so an :math:`L`-layer GCN normalized :math:`2L`
times a step (32 operators each, about 0.5 ms on Cora with 2 threads).

While a converted model's forward runs (:mod:`iexact.nn.shared_graphs` opens
:data:`SHARED_GRAPHS`), the Functions that normalize the same graph tensors
share one :class:`SharedGraph`: the first computes the normalization, the
others of that forward read it, and it is dropped when the forward ends, so
nothing more is held between forward and backward than before. In backward
the first of them to run computes it again and the last to run drops it: two
normalizations a step whatever the depth. The graph is recognized by its
tensors' identity and version (:func:`shared_graph`; in-place changes make
another graph), never by address alone, and those tensors are held until the
forward ends, so no other tensor can take their place meanwhile. Outside a
converted model's forward, and in a compiled graph (which reads no
ContextVar and plans its own reuse), each Function normalizes its own.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

import torch

SHARED_GRAPHS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("iexact_shared_graphs", default=None)
"""During a converted model's forward, ``{key: (SharedGraph, tensors)}`` of
the graphs its Functions normalized (:func:`shared_graph`); ``None`` elsewhere."""


class SharedGraph:
    """One graph's normalization, shared by the Functions of one forward that read it.

    ``readers`` counts the Functions that read it in forward (each will read
    it once in backward); ``reads`` those that read it in this backward so far.
    """

    __slots__ = ("reads", "readers", "value")

    def __init__(self) -> None:
        self.value: tuple | None = None
        self.readers = 0
        self.reads = 0

    def in_forward(self, compute: Callable[[], tuple]) -> tuple:
        """The normalization, computed by the first reader of the forward."""
        if self.value is None:
            self.value = compute()
        self.readers += 1
        return self.value

    def in_backward(self, compute: Callable[[], tuple]) -> tuple:
        """The normalization, computed by the first reader of a backward and
        dropped by the last (a retained graph's next backward starts again;
        a backward reaching only some readers leaves it held until the
        autograd graph is freed)."""
        value = self.value if self.value is not None else compute()
        self.reads += 1
        if self.reads >= self.readers:
            self.reads, self.value = 0, None
        else:
            self.value = value
        return value

    def forward_ended(self) -> None:
        """Drop the forward's value: backward computes its own."""
        self.value = None


def shared_graph(key: tuple, *tensors: torch.Tensor | None) -> SharedGraph | None:
    """The :class:`SharedGraph` of ``tensors`` (the graph's structure and
    weights, ``None`` for absent weights) normalized as ``key`` says (node
    count, flags, dtype) in the current forward; ``None`` outside a converted
    model's forward or while compiling."""
    if torch.compiler.is_compiling():  # (Dynamo cannot read a ContextVar)
        return None
    graphs = SHARED_GRAPHS.get()
    if graphs is None:
        return None
    identity = (key, *((None, None) if t is None else (id(t), t._version) for t in tensors))
    entry = graphs.get(identity)
    if entry is None:  # the tensors held to the forward's end: no other object takes their id meanwhile
        entry = graphs[identity] = (SharedGraph(), tensors)
    return entry[0]


def open_shared_graphs() -> contextvars.Token | None:
    """Begin sharing (a converted model's forward begins); ``None`` where an
    outer forward shares already, or while compiling."""
    if torch.compiler.is_compiling() or SHARED_GRAPHS.get() is not None:
        return None
    return SHARED_GRAPHS.set({})


def close_shared_graphs(token: contextvars.Token) -> None:
    """End what :func:`open_shared_graphs` began: every forward value dropped."""
    graphs = SHARED_GRAPHS.get()
    SHARED_GRAPHS.reset(token)
    for shared, _ in (graphs or {}).values():
        shared.forward_ended()
