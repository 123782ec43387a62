r"""Calling an iexact operator's implementation directly where the operator adds nothing.

The ``torch.library`` boundary is what a compiled graph, a fake-tensor
trace or a dispatch mode (a byte counter, a sync detector) needs: one opaque
node with a shape-only implementation. In plain eager code nothing looks at
it, and passing it costs about 30 µs of Python dispatch per call (the
autograd wrapper, the redispatch, the list of outputs): some 0.5 ms of a
step of a three-layer model on a 2,708-node graph. :func:`call` runs the
implementation itself then, the same function on the same arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

Result = TypeVar("Result")


def plain_eager(*tensors: torch.Tensor | None) -> bool:
    """Whether nothing but eager execution would see an operator called on
    ``tensors``: no compilation or export tracing, no dispatch mode, no
    torch-function mode (one would see every op inside the implementation
    instead of the operator), and plain tensors only (no subclass, no fake
    or functional tensor)."""
    return (
        not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None
        and torch._C._len_torch_function_stack() == 0
        and all(t is None or type(t) is torch.Tensor for t in tensors)
    )


def call(operator: Callable[..., Result], *args) -> Result:
    """``operator(*args)``, or its implementation on ``args`` where
    :func:`plain_eager` holds for the tensors among ``args`` (and in the lists
    among them). ``operator`` is a ``torch.library`` custom operator, or a
    plain function standing for one (then called either way)."""
    tensors = [item for arg in args for item in (arg if isinstance(arg, (list, tuple)) else (arg,))]
    implementation: Callable[..., Result] = getattr(operator, "_init_fn", operator)
    eager = plain_eager(*(item for item in tensors if isinstance(item, torch.Tensor)))
    return implementation(*args) if eager else operator(*args)
