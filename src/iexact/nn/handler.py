r"""Compressed behaviour for existing modules: the handler base class and its registry.

A *handler* is a class deriving from :class:`CompressedModule` whose
``forward`` replaces a module's own in training mode. :func:`compressed_class`
combines it with the module's class into a subclass, and
:func:`iexact.compress_` switches a module's ``__class__`` to it: parameters,
buffers, hooks, ``reset_parameters`` and the ``state_dict`` stay exactly the
module's own, and optimizers holding its parameters keep working. In
``eval()`` or under ``torch.no_grad()`` the original ``forward`` runs, so
outputs are identical bit for bit.

Handlers are registered per module class with :func:`register_handler`;
users register their own the same way::

    @iexact.nn.register_handler(MyConv)
    class MyConvHandler(iexact.nn.CompressedModule):
        def forward(self, x, edge_index):
            if not self._compressing():
                return super().forward(x, edge_index)
            ...  # iexact.autograd ops with self.iexact_config, self.iexact_seeds
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch_geometric.nn import MessagePassing

from ..config import CompressionConfig
from ..seeds import SeedStream

_HANDLERS: dict[type[torch.nn.Module], type[CompressedModule]] = {}
HANDLERS: Mapping[type[torch.nn.Module], type[CompressedModule]] = MappingProxyType(_HANDLERS)
"""Read-only view of the registry: module class -> handler class."""
_CLASSES: dict[tuple[type, type], type[torch.nn.Module]] = {}  # compressed_class's, by (handler, base)


def register_handler(*module_classes: type):
    """Class decorator: the decorated :class:`CompressedModule` subclass handles
    modules whose class is exactly one of ``module_classes`` (a later
    registration for the same class replaces an earlier one)."""
    if not module_classes or not all(
        isinstance(cls, type) and issubclass(cls, torch.nn.Module) for cls in module_classes
    ):
        raise TypeError(f"register_handler takes torch.nn.Module classes, got {module_classes!r}")

    def decorate(handler: type[CompressedModule]) -> type[CompressedModule]:
        if not (isinstance(handler, type) and issubclass(handler, CompressedModule)):
            raise TypeError(f"a handler must subclass iexact.nn.CompressedModule, got {handler!r}")
        for cls in module_classes:
            _HANDLERS[cls] = handler
        return handler

    return decorate


def is_lazy(*linears: torch.nn.Module | None) -> bool:
    """Whether any of ``linears`` still has an uninitialized (lazy) weight."""
    return any(
        isinstance(getattr(lin, "weight", None), torch.nn.parameter.UninitializedParameter)
        for lin in linears
        if lin is not None
    )


def lazy_reason(module: torch.nn.Module, handler: type[CompressedModule]) -> str | None:
    """Why ``module`` cannot be converted yet: a weight of its own or of a
    child its ``handler`` computes (:meth:`CompressedModule.owned`) is still
    uninitialized (lazy); ``None`` otherwise."""
    if is_lazy(module, *handler.owned(module)):
        return "lazy (run one forward pass before compress_)"
    return None


def original_class(module: torch.nn.Module) -> type[torch.nn.Module]:
    """``module``'s class before :func:`iexact.compress_` converted it (its class when not converted)."""
    return module.iexact_base if isinstance(module, CompressedModule) else type(module)


def hook_forward_(model: torch.nn.Module, begin, end, with_kwargs: bool = False) -> None:
    """Register ``begin`` as a forward pre-hook of ``model`` and ``end`` as a
    forward hook run even when the forward raises (``always_call``), unless
    ``begin`` is there already: the model-wide hooks of :func:`iexact.compress_`
    (a second call adds none)."""
    if begin not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(begin, with_kwargs=with_kwargs)
        model.register_forward_hook(end, with_kwargs=with_kwargs, always_call=True)


def keep_token(model: torch.nn.Module, name: str, token: contextvars.Token | None) -> None:
    """Keep ``token`` (a ContextVar's, set as ``model``'s forward begins) on
    ``model`` under ``name`` for :func:`take_token`; ``None`` (nothing set: an
    outer forward's scope, or a compiled graph's) keeps nothing."""
    if token is not None:
        model.__dict__[name] = token


def take_token(model: torch.nn.Module, name: str) -> contextvars.Token | None:
    """The token :func:`keep_token` kept on ``model`` under ``name``, removed, as
    its forward ends; ``None`` if none, or under ``torch.compile`` (whose graph
    reads no ContextVar)."""
    if torch.compiler.is_compiling():
        return None
    return model.__dict__.pop(name, None)


def unhook_forward_(model: torch.nn.Module, begin, end) -> None:
    """Remove the hooks :func:`hook_forward_` registered, and their flags."""
    flags = (model._forward_hooks_always_called, model._forward_pre_hooks_with_kwargs, model._forward_hooks_with_kwargs)
    for hooks, ours in ((model._forward_pre_hooks, begin), (model._forward_hooks, end)):
        for key in [key for key, hook in hooks.items() if hook is ours]:
            del hooks[key]
            for flag in flags:
                flag.pop(key, None)


def has_forward_hooks(*modules: torch.nn.Module) -> bool:
    """Whether forward (pre-)hooks would run around any of ``modules``: their
    own or the global ones (``torch.nn.modules.module.register_module_forward_hook``),
    but for iexact's own observers (marked ``iexact_observer``, such as
    :func:`~iexact.memory.running_modules`'), which neither keep nor change a tensor."""
    from torch.nn.modules import module as torch_module

    hooks = [*torch_module._global_forward_hooks.values(), *torch_module._global_forward_pre_hooks.values()]
    for module in modules:
        hooks += [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return any(not getattr(hook, "iexact_observer", False) for hook in hooks)


# the handlers are mixins of torch.nn.Module subclasses: checked as modules, built as plain classes
if TYPE_CHECKING:
    _ModuleBase = torch.nn.Module
else:
    _ModuleBase = object


class CompressedModule(_ModuleBase):
    """Base of every handler: the module's :class:`CompressionConfig`, its
    :class:`~iexact.seeds.SeedStream` and its class before conversion."""

    iexact_config: CompressionConfig
    iexact_seeds: SeedStream
    iexact_base: type  # the module's own class before conversion

    @staticmethod
    def unsupported(module) -> str | None:
        """Why ``module``'s settings cannot be compressed, or ``None``
        (laziness is :func:`lazy_reason`'s to say, for every handler alike)."""
        return None

    @staticmethod
    def owned(module) -> list[torch.nn.Module]:
        """Child modules whose computation the handler does itself (a conv's
        linear maps): :func:`iexact.compress_` leaves them unconverted and
        does not ask ``filter_fn`` about them."""
        return []

    def _compressing(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling sources
        raise RuntimeError(
            f"iexact: {type(self).__name__} cannot be scripted: torch.jit.script compiles forward from its "
            "source and the compressed forward calls autograd Functions TorchScript cannot hold. Use "
            "torch.compile (supported: one graph, no breaks), or iexact.nn.restore_(model) to script the "
            "uncompressed model."
        )

    def __reduce_ex__(self, protocol):
        # the generated class is not importable by name: rebuild it from its handler and base
        handler = type(self).__bases__[0]
        return _new_compressed, (handler, self.iexact_base), self.__getstate__()

    def extra_repr(self) -> str:
        own = super().extra_repr()
        return f"{own}, iexact={self.iexact_config}" if own else f"iexact={self.iexact_config}"


def _new_compressed(handler: type[CompressedModule], base: type[torch.nn.Module]) -> torch.nn.Module:
    """An empty instance of ``compressed_class(handler, base)`` for unpickling."""
    cls = compressed_class(handler, base)
    return cls.__new__(cls)


def _keep_base_templates(self, raise_on_error: bool = False) -> None:
    """PyG generates a specialized ``propagate`` per class on construction and
    on unpickling (``copy.deepcopy`` included). For a compressed class it would
    record the base's specialized ``propagate`` as the generic one, which
    then drops explain masks; so the compressed class generates none and
    inherits its base's."""


def compressed_class(handler: type, base: type) -> type[torch.nn.Module]:
    """The subclass of ``base`` with ``handler``'s forward: one class per pair
    (kept in :data:`_CLASSES`), so converted modules of one class share it."""
    made = _CLASSES.get((handler, base))
    if made is None:
        name = f"Compressed{base.__name__}"
        namespace = {"__module__": "iexact.nn", "__qualname__": name, "iexact_base": base}
        if issubclass(base, MessagePassing):
            namespace["_set_jittable_templates"] = _keep_base_templates
        made = _CLASSES.setdefault((handler, base), type(name, (handler, base), namespace))
    return made
