r"""What a converted model's own code saves: the torch calls between its modules.

A model's forward often computes between its modules: PyG's examples apply
``F.dropout`` and ``.relu()`` between two convs, and ``F.elu`` in GAT's.
Those calls belong to no module, so no handler and no fallback module sees
them, and autograd would keep what they save in full precision (the
two-layer GCN of PyG's ``gcn.py`` on Cora, converted: 90 % of what it kept).
:func:`watch_model_code_` hooks a converted model so that, while its forward
runs, the torch calls of *its own code* (the forward of the model and of
every container in it: a module with no handler that leaves its computation
to its children, such as a user's block or PyG's ``MLP``) keep what they
save compressed, as a module's would be:

- ``torch.nn.functional.dropout`` runs as :class:`~iexact.autograd.DropoutFunction`
  (torch's mask from torch's generator; a snapshot of it kept, no mask);
- ``elu`` and the smooth activations (``gelu``, ``silu``, ``mish``,
  ``tanh``, ``sigmoid``, ``softplus``; functions or tensor methods) run as
  the activation handlers' Functions with the model's config (unbiased);
- anything else they save is kept as the saved-tensor fallback keeps a
  module's (:mod:`iexact.nn.fallback`): the output of ReLU and LeakyReLU as
  one bit per element, what a backward compares exact, other floating
  tensors compressed with the fallback's config.

Only tensors that need a gradient and hold at least
:data:`~iexact.nn.fallback.FALLBACK_MIN_BYTES` are routed or compressed.
Inside any other module (converted, under the fallback, or left as it is
by ``filter_fn``) nothing changes: forward hooks on the modules the model's
code calls say whose code is running. ``compress_(..., fallback=None)``
leaves the model's code as torch keeps it; under ``torch.compile`` the hooks
return at once and the compiled code keeps what torch keeps.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..autograd import CompressedELUFunction, CompressedSmoothFunction, DropoutFunction, mark_intermediate
from ..config import CompressionConfig
from ..seeds import SeedStream
from .fallback import FALLBACK_MIN_BYTES, _Calls, _Saved
from .handler import hook_forward_, unhook_forward_

_SETTINGS = "iexact_model_code"  # the model's attribute holding its ModelCode
_OPEN = "iexact_model_code_scope"  # the model's attribute holding an open forward's scope and token
STATELESS = (torch.nn.Identity, torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
"""torch's containers that compute nothing of their own: their children are called by the code calling them."""


@dataclasses.dataclass(frozen=True)
class ModelCode:
    """How a converted model's own code keeps what it saves: routed activations
    with ``config`` (the model's), the rest with ``fallback``, seeded from ``seeds``."""

    config: CompressionConfig
    fallback: CompressionConfig
    seeds: SeedStream


class _Frames:
    """Whose code runs in one forward of a converted model: a frame per running
    module, ``True`` where its code is the model's (the model's or a container's),
    and whether a routed call's Function is saving what it keeps. The watcher and
    hooks read it; it refers to neither (no cycle keeps them beyond the graph)."""

    def __init__(self, settings: ModelCode):
        self.settings = settings
        self.stack: list[tuple[bool, bool]] = []  # (the model's code, whether entering it toggled the watcher)
        self.routing = False

    @property
    def in_code(self) -> bool:
        """Whether the code running is the model's own."""
        return bool(self.stack) and self.stack[-1][0]


class _Scope:
    """One forward of a converted model: its torch-call watcher and saved-tensor
    hooks, active in the model's own code only (:class:`_Frames`): a module
    whose code is not the model's suspends them while it runs (where they are
    the innermost: a user's mode or hooks entered above them leave them
    active, and they pass through what is not the model's code), a container
    inside it resumes them."""

    def __init__(self, model: torch.nn.Module, settings: ModelCode, inputs: tuple):
        self.frames = _Frames(settings)
        self.active = False
        self.calls = _ModelCalls(self.frames)
        self.saved = _ModelSaved(self.frames, settings.fallback, settings.seeds, model, inputs, self.calls)
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.saved.pack, self.saved.unpack)

    def enter(self, code: bool) -> None:
        """A module's forward begins; ``code``: its code is the model's."""
        toggled = code != self.active and (code or self._innermost())
        if toggled:
            self._resume() if code else self._suspend()
        self.frames.stack.append((code, toggled))

    def leave(self) -> None:
        """The forward :meth:`enter` began ends."""
        code, toggled = self.frames.stack.pop()
        if toggled:
            self._suspend() if code else self._resume()

    def _innermost(self) -> bool:
        """Whether the watcher and hooks are the innermost torch-function mode and saved-tensor hooks."""
        modes = torch._C._len_torch_function_stack()
        hooks = torch._C._autograd._top_saved_tensors_default_hooks(False)
        on_top = modes > 0 and torch._C._get_function_stack_at(modes - 1) is self.calls
        return on_top and hooks is not None and hooks[0] == self.saved.pack

    def _resume(self) -> None:
        self.calls.__enter__()
        self.hooks.__enter__()
        self.active = True

    def _suspend(self) -> None:
        self.hooks.__exit__(None, None, None)
        self.calls.__exit__(None, None, None)
        self.active = False


_RUNNING: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("iexact_model_code", default=None)


class _ModelCalls(_Calls):
    """The fallback's torch-call watcher, for the model's own code only, routing
    dropout and the element-wise activations (:data:`_ROUTES`) to iexact's Functions."""

    def __init__(self, frames: _Frames):
        super().__init__()
        self.frames = frames

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.frames.in_code or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        route = _ROUTES.get(func)
        if route is not None and args and _routable(args[0]):
            self.frames.routing = True
            try:
                out = route(self.frames.settings, *args, **kwargs)
            finally:
                self.frames.routing = False
            if out is not None:
                return mark_intermediate(out)
        return super().__torch_function__(func, types, args, kwargs)


def _routable(x) -> bool:
    """Whether the first argument of a routed call is a tensor its Function takes and compresses."""
    return (
        isinstance(x, torch.Tensor)
        and x.is_floating_point()
        and x.layout == torch.strided
        and x.requires_grad
        and x.numel() * x.element_size() >= FALLBACK_MIN_BYTES
    )


class _ModelSaved(_Saved):
    """The fallback's pack and unpack hooks, for what the model's own code saves."""

    def __init__(self, frames: _Frames, *args):
        super().__init__(*args)
        self.frames = frames

    def pack(self, tensor: torch.Tensor):
        if not self.frames.in_code or self.frames.routing:  # a module's, or a routed Function's own storage
            return ("kept", self._outer_pack(tensor))
        return super().pack(tensor)


def _dropout(settings: ModelCode, input, p=0.5, training=True, inplace=False):
    if not training or inplace or not 0 < p < 1:
        return None
    return DropoutFunction.apply(input, p, settings.config.keeps_dropout_bits(input.device))


def _elu(settings: ModelCode, input, alpha=1.0, inplace=False):
    return None if inplace else CompressedELUFunction.apply(input, alpha, settings.config, settings.seeds)


def _smooth(kind: str):
    """The route of the smooth activation ``kind`` (:data:`iexact.autograd.activation.SMOOTH`)."""

    def route(settings: ModelCode, input, *params, inplace=False, **named):
        if inplace:
            return None
        if kind == "gelu":
            params = (named.pop("approximate", params[0] if params else "none"),)
        elif kind == "softplus":
            given = dict(zip(("beta", "threshold"), params, strict=False)) | named
            params, named = (float(given.pop("beta", 1.0)), float(given.pop("threshold", 20.0))), given
        if named or (kind not in ("gelu", "softplus") and params):  # out= or an unknown argument: torch's own call
            return None
        return CompressedSmoothFunction.apply(input, kind, params, settings.config, settings.seeds)

    return route


_ROUTES = {
    F.dropout: _dropout,
    F.elu: _elu,
    F.gelu: _smooth("gelu"),
    F.silu: _smooth("silu"),
    F.mish: _smooth("mish"),
    F.softplus: _smooth("softplus"),
    torch.tanh: _smooth("tanh"),
    torch.Tensor.tanh: _smooth("tanh"),
    F.tanh: _smooth("tanh"),
    torch.sigmoid: _smooth("sigmoid"),
    torch.Tensor.sigmoid: _smooth("sigmoid"),
    F.sigmoid: _smooth("sigmoid"),
}


def _running() -> _Scope | None:
    """The scope of the forward running, ``None`` outside one or in a compiled graph (which reads no ContextVar)."""
    return None if torch.compiler.is_compiling() else _RUNNING.get()


def _enter_code(module: torch.nn.Module, args, kwargs) -> None:
    """A container's forward begins: the model's code runs (the first opens the scope)."""
    if torch.compiler.is_compiling():
        return
    scope = _RUNNING.get()
    if scope is None:
        scope = _Scope(module, module.__dict__[_SETTINGS], (args, kwargs))
        module.__dict__[_OPEN] = (scope, _RUNNING.set(scope))
    scope.enter(True)


def _leave_code(module: torch.nn.Module, args, kwargs, output) -> None:
    scope = _running()
    if scope is None:
        return
    scope.leave()
    opened = module.__dict__.get(_OPEN)
    if opened is not None and opened[0] is scope:
        del module.__dict__[_OPEN]
        _RUNNING.reset(opened[1])
        scope.saved.close()


def _enter_module(module: torch.nn.Module, args) -> None:
    """A module whose code is not the model's begins its forward."""
    scope = _running()
    if scope is not None:
        scope.enter(False)


def _leave_module(module: torch.nn.Module, args, output) -> None:
    scope = _running()
    if scope is not None:
        scope.leave()


for _hook in (_enter_code, _leave_code, _enter_module, _leave_module):
    setattr(_hook, "iexact_observer", True)  # see iexact.nn.handler.has_forward_hooks  # noqa: B010


def watch_model_code_(
    model: torch.nn.Module, settings: ModelCode, is_container: Callable[[torch.nn.Module], bool]
) -> None:
    """Hook ``model`` (once) so that what its own code saves is kept compressed
    with ``settings`` (see the module docstring), where ``model`` is a
    container (``is_container``): it and each container its code calls
    (through torch's stateless containers) run the model's code, the first
    to run opens the scope; each other module its code calls runs its own.
    What runs inside a module of its own (a converted conv calling its
    aggregation module) is that module's: not hooked."""
    unwatch_model_code_(model)
    if not is_container(model):
        return
    containers: list[torch.nn.Module] = [model]
    called: list[torch.nn.Module] = []
    while containers:
        container = containers.pop()
        container.__dict__[_SETTINGS] = settings
        hook_forward_(container, _enter_code, _leave_code, with_kwargs=True)
        for child in _called_children(container):
            (containers if is_container(child) else called).append(child)
    for module in called:
        hook_forward_(module, _enter_module, _leave_module)


def _called_children(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The children of ``module``, those of its stateless containers in their place."""
    children = []
    for child in module.children():
        children += _called_children(child) if isinstance(child, STATELESS) else [child]
    return children


def unwatch_model_code_(model: torch.nn.Module) -> None:
    """Remove what :func:`watch_model_code_` added."""
    for module in model.modules():
        module.__dict__.pop(_SETTINGS, None)
        unhook_forward_(module, _enter_code, _leave_code)
        unhook_forward_(module, _enter_module, _leave_module)
