"""The modules every handler is checked on, gathered from the handlers' own test files.

Each module ``iexact.nn.<name>`` that registers a handler has its test file
``tests/nn/test_<name>.py``, whose ``EXAMPLES`` list the instances the
shared checks run (``tests/nn/test_handler.py``: gradients against the
uncompressed twin for every graph form, unbiasedness at INT2;
``tests/nn/test_message_inputs.py``: every PyG input form of a conv). A
handler is added with its file and its test file; nothing here names it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import pytest
import torch
from torch_geometric.nn import MessagePassing

from iexact.nn import HANDLERS

RELATIONS = 3  # the relations of a "typed" example's edges


@dataclasses.dataclass(frozen=True)
class Example:
    """A module to check: ``build(features)`` makes it for ``features`` input
    channels; ``inputs`` says how it is called: ``"x"`` (features only),
    ``"graph"`` (``x, graph``), ``"graph2"`` (``x, x_0, graph``, as
    GCN2Conv), ``"typed"`` (``x, graph, edge_type``, as RGCNConv, the edges
    of :data:`RELATIONS` relations in turn), ``"index"`` (an aggregation: ``x, index, dim_size=``, the
    rows in groups of about four) or ``"sequence"`` (attention: ``x`` as a
    batch of sequences of five, ``(x, x, x)``, the output's rows back in
    ``x``'s order); ``unbiased`` is ``False`` for one whose gradient is exact (the
    check of unbiasedness then has nothing to measure); ``graphs`` the graph
    forms the stock module takes (ChebConv refuses a ``torch.sparse`` adjacency)."""

    name: str
    build: Callable[[int], torch.nn.Module]
    inputs: str = "graph"
    unbiased: bool = True
    graphs: tuple[str, ...] = ("edge_index", "EdgeIndex", "csr", "coo")

    def __str__(self) -> str:
        return self.name

    @property
    def reads_graph(self) -> bool:
        return self.inputs in ("graph", "graph2", "typed")

    def call(self, module: torch.nn.Module, x: torch.Tensor, graph=None, **kwargs):
        """``module`` called as this example says, ``x_0`` (``graph2``) or the groups (``index``) made from ``x``."""
        if self.inputs == "x":
            return module(x)
        if self.inputs == "index":
            groups = max(1, x.shape[0] // 4)
            index = torch.arange(x.shape[0], device=x.device).mul_(7919).remainder_(groups)
            return module(x, index, dim_size=groups + 1, **kwargs)  # the last group empty
        if self.inputs == "sequence":
            sequences = x.unflatten(0, (-1, 5))
            return module(sequences, sequences, sequences, **kwargs)[0].flatten(0, 1)
        if self.inputs == "graph2":
            return module(x, x.detach() * 0.5, graph, **kwargs)
        if self.inputs == "typed":
            return module(x, graph, torch.arange(graph.shape[1], device=x.device) % RELATIONS, **kwargs)
        return module(x, graph, **kwargs)


def handler_modules() -> list[str]:
    """The modules of ``iexact.nn`` that register a handler (users' own handlers aside)."""
    return sorted({handler.__module__ for handler in HANDLERS.values() if handler.__module__.startswith("iexact.nn.")})


def examples() -> list[Example]:
    """Every handler test file's ``EXAMPLES``, in module order.

    Raises:
        AttributeError: a handler's test file without ``EXAMPLES``.
    """
    found = []
    for module in handler_modules():
        found += importlib.import_module(f"tests.nn.test_{module.rsplit('.', 1)[1]}").EXAMPLES
    return found


def first_of_each_module() -> list[Example]:
    """The first unbiasedness-checked example of each handler's test file: the
    subset a long statistical check runs by default (the rest are ``slow``)."""
    firsts = []
    for module in handler_modules():
        listed = importlib.import_module(f"tests.nn.test_{module.rsplit('.', 1)[1]}").EXAMPLES
        firsts += [example for example in listed if example.unbiased][:1]
    return firsts


def statistical_examples() -> list:
    """The examples an unbiasedness check runs, as ``pytest`` parameters: the first of
    each handler's test file by default (:func:`first_of_each_module`), the rest ``slow``."""
    firsts = first_of_each_module()
    return [
        pytest.param(example, marks=() if example in firsts else pytest.mark.slow)
        for example in examples()
        if example.unbiased
    ]


def conv_examples() -> list[Example]:
    """The examples that are message-passing layers reading a graph (not DynamicEdgeConv, which builds its own)."""
    return [example for example in examples() if example.reads_graph and isinstance(example.build(6), MessagePassing)]
