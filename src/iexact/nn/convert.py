r"""``compress_``: convert a model's modules in place."""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeGuard, cast

import torch
from torch_geometric.nn import GENConv, MessagePassing

from ..config import CompressionConfig
from ..seeds import SeedStream
from .fallback import DEFAULT_FALLBACK, FallbackHandler
from .finite_checks import unwatch_finite_checks_, watch_finite_checks_
from .fusion import link_activations_, unlink_activations_
from .handler import HANDLERS, CompressedModule, compressed_class, is_lazy, lazy_reason, original_class
from .held import unwatch_held_, watch_held_
from .model_code import STATELESS, ModelCode, unwatch_model_code_, watch_model_code_
from .shared_graphs import unwatch_shared_graphs_, watch_shared_graphs_

NODE_CHILDREN: Mapping[type[torch.nn.Module], tuple[str, ...]] = MappingProxyType(
    {GENConv: ("lin_src", "lin_aggr_out", "msg_norm", "lin_dst", "mlp")}
)
"""Per conv class that keeps tensors per edge and calls children of its own
that compute on its nodes (its handler calls them, or, in a setting the
handler does not compress, the saved-tensor fallback's forward): those
children's names. They are converted with
:attr:`~iexact.CompressionConfig.edge_conv_inputs` (unprojected unless
``rp_edge_convs``), as the handled convs keep the node features of the maps
they compute themselves: GENConv's softmax aggregation keeps its messages per edge,
most of its bytes, so projecting its MLP's and linear maps' inputs saves few
bytes and adds most of its gradient noise."""


def _may_keep_activations(module: torch.nn.Module) -> bool:
    """Whether an unconverted ``module`` may save activations of its own: a
    message-passing layer, an activation, or a module holding parameters or
    buffers of its own whose children, if any, are activations it applies (a
    Linear; the fixed projection and kernel of ``PerformerAttention``'s
    features). A container of other modules leaves them to themselves."""
    if isinstance(module, STATELESS):
        return False
    if isinstance(module, MessagePassing) or _is_activation(module):
        return True
    state = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
    return state and all(_is_activation(child) for child in module.children())


def _is_activation(module: torch.nn.Module) -> bool:
    """Whether ``module`` is one of torch's activation modules (converted or not)."""
    return original_class(module).__module__ == torch.nn.modules.activation.__name__


def is_compressed(module: torch.nn.Module) -> TypeGuard[CompressedModule]:
    """Whether ``module`` was converted by :func:`compress_`."""
    return isinstance(module, CompressedModule)


def compress_(
    model: torch.nn.Module,
    config: CompressionConfig,
    filter_fn: Callable[[torch.nn.Module, str], bool] | None = None,
    fallback: CompressionConfig | None = DEFAULT_FALLBACK,
) -> torch.nn.Module:
    r"""Make ``model`` keep compressed activations for backward, in place.

    Every module whose class has a registered handler
    (:func:`iexact.nn.register_handler`; :data:`iexact.nn.HANDLERS` lists
    them, and so does the documentation's table of modules) is switched to a
    compressed subclass. Parameter objects, names and
    ``state_dict`` are unchanged, and an optimizer created before the call
    keeps working. Calling it again updates the config.

    **What** ``filter_fn`` **decides.** ``filter_fn(module, name)`` is asked
    once per module; ``False`` leaves that module as it is. A converted conv
    computes its own linear maps (GCN's ``lin``, SAGE's ``lin_l``/``lin_r``/
    ``lin``, GAT's ``lin``/``res``): those children stay unconverted and are
    not asked about, for every conv alike. An excluded (or unsupported) conv
    runs PyG's own forward, which calls its children, so they are asked about
    and converted as any module: to keep a whole conv uncompressed, exclude
    its name and its children's (``not name.startswith("convs.1")``).
    GINConv's ``nn`` is always converted module by module.

    **Convs keeping tensors per edge.** The children of a GENConv that compute on its
    nodes (:data:`NODE_CHILDREN`: its MLP, its linear maps) are converted with
    ``config.edge_conv_inputs``, unprojected unless ``rp_edge_convs``, as the attention,
    gated, edge and PNA convs keep the node features of the maps they compute themselves.

    **The fallback.** A module in a setting its handler does not compress
    (``SAGEConv(aggr="max")``) or with no handler that may save activations
    of its own (a message-passing layer, an activation, a module computing with
    parameters or buffers of its own) keeps what autograd saves for it compressed
    with ``fallback`` (:mod:`iexact.nn.fallback`), eagerly under ``torch.compile``.
    One warning names these modules, and those left full precision.

    **The model's own code** between its modules (PyG's examples'
    ``F.dropout``, ``.relu()``, ``F.elu``) keeps what it saves as a module
    would: dropout and activations through iexact's Functions with
    ``config``, the rest by the fallback's rules (:mod:`iexact.nn.model_code`).

    Args:
        model (torch.nn.Module): the model, changed in place.
        config (CompressionConfig): how to compress.
        filter_fn (callable, optional): ``filter_fn(module, name)`` returns
            ``False`` to leave a module as it is. (default: :obj:`None`)
        fallback (CompressionConfig, optional): the config of the saved-tensor
            fallback and of the model's own code; ``None`` turns both off.
            (default: 8 bits, no projection)

    Returns:
        ``model``.
    """
    _check_arguments(model, config, filter_fn, fallback)
    seeds = SeedStream.from_torch_seed()
    generic, skipped, excluded = _convert_modules(model, config, filter_fn, fallback, seeds)
    _link_model_(model, None if fallback is None else ModelCode(config, fallback, seeds), _container_test(excluded))
    _warn(generic, skipped, fallback)
    return model


def _convert_modules(
    model: torch.nn.Module,
    config: CompressionConfig,
    filter_fn: Callable[[torch.nn.Module, str], bool] | None,
    fallback: CompressionConfig | None,
    seeds: SeedStream,
) -> tuple[list[str], list[str], set[int]]:
    """Convert each module of ``model`` as :func:`compress_` says (its shared
    default children copied first, :func:`_unshare_defaults_`); ``(generic,
    skipped, excluded)``: the modules the fallback takes and those left full
    precision, described, and the ids of those ``filter_fn`` left as they are."""
    _unshare_defaults_(model)
    owned: set[int] = set()  # ids of children computed by a converted conv
    node_scopes: list[str] = []  # names of NODE_CHILDREN met so far: their modules take config.edge_conv_inputs
    generic: list[str] = []
    skipped: list[str] = []
    excluded: set[int] = set()
    for name, module in model.named_modules():
        scoped = any(name == scope or name.startswith(scope + ".") for scope in node_scopes)
        node_scopes += [f"{name}.{child}".lstrip(".") for child in NODE_CHILDREN.get(original_class(module), ())]
        if id(module) in owned:
            module.__class__ = original_class(module)
        elif filter_fn is None or filter_fn(module, name):
            reason = _convert(module, config.edge_conv_inputs if scoped else config, seeds, owned)
            if reason is not None:
                (generic if _fall_back(module, fallback, seeds) else skipped).append(f"{name or '<model>'} ({reason})")
        else:
            excluded.add(id(module))
    return generic, skipped, excluded


def _container_test(excluded: set[int]) -> Callable[[torch.nn.Module], bool]:
    """Whether a module's own forward is its model's code (:mod:`iexact.nn.model_code`):
    not converted, not one that may keep activations of its own, not one of
    torch's stateless containers, and not left as it is by ``filter_fn``."""

    def is_container(module: torch.nn.Module) -> bool:
        return not (
            id(module) in excluded
            or isinstance(module, (CompressedModule, *STATELESS))
            or _may_keep_activations(module)
        )

    return is_container


def _link_model_(
    model: torch.nn.Module, model_code: ModelCode | None, is_container: Callable[[torch.nn.Module], bool]
) -> None:
    """What a converted model holds as a whole: its activations that leave their
    derivative to a dropout, and the hooks reading its finite checks once per forward,
    publishing what its caller holds (:mod:`iexact.nn.held`), sharing its graphs'
    normalizations (:mod:`iexact.nn.shared_graphs`) and compressing what its own
    code saves with ``model_code`` (:mod:`iexact.nn.model_code`; ``None``: off)."""
    link_activations_(model)
    watch_finite_checks_(model)
    watch_held_(model)
    watch_shared_graphs_(model)
    if model_code is None:
        unwatch_model_code_(model)
    else:
        watch_model_code_(model, model_code, is_container)


def _unshare_defaults_(model: torch.nn.Module) -> None:
    """Give every module of ``model`` its own copy of a child that is a default
    argument of its constructor (``ResGatedGraphConv(act=Sigmoid())``,
    ``FiLMConv(act=ReLU())``): Python builds such a default once, so every
    instance of the class shares it, and converting it in place would
    change all of them, the user's uncompressed twins included. Only
    children without parameters or buffers are copied (nothing an optimizer
    or a ``state_dict`` holds changes identity)."""
    for module in model.modules():
        defaults = _module_defaults(type(module))
        for name, child in list(module.named_children()):
            stateless = not any(True for _ in child.parameters()) and not any(True for _ in child.buffers())
            if stateless and any(child is default for default in defaults):
                setattr(module, name, copy.deepcopy(child))


def _module_defaults(cls: type) -> list[torch.nn.Module]:
    """The modules among the default arguments of ``cls.__init__``."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # a constructor without a readable signature
        return []
    return [parameter.default for parameter in parameters if isinstance(parameter.default, torch.nn.Module)]


def _fall_back(module: torch.nn.Module, fallback: CompressionConfig | None, seeds: SeedStream) -> bool:
    """Give ``module`` the saved-tensor fallback, unless it is off or the module
    lazy (until its first forward); ``False`` when it stays as it is."""
    if fallback is not None and not is_lazy(*module.modules()):
        _switch(module, FallbackHandler, fallback, seeds)
        return True
    module.__class__ = original_class(module)  # a fallback module of an earlier call too
    return False


def _warn(generic: list[str], skipped: list[str], fallback: CompressionConfig | None) -> None:
    """One warning naming the modules the fallback compresses and those left full precision."""
    parts = []
    if generic:
        parts.append(
            f"these modules keep what autograd saves for them compressed by the saved-tensor fallback "
            f"({fallback}; values a backward compares kept exact; torch.compile runs them eagerly, "
            f"fallback=None turns it off): " + ", ".join(generic)
        )
    if skipped:
        parts.append("these modules' saved activations stay full precision: " + ", ".join(skipped))
    if parts:
        warnings.warn("iexact.compress_: " + "; ".join(parts), stacklevel=3)


def _check_arguments(model, config, filter_fn, fallback) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, CompressionConfig):
        raise TypeError(f"config must be an iexact.CompressionConfig, got {type(config).__name__}")
    if fallback is not None and not isinstance(fallback, CompressionConfig):
        raise TypeError(f"fallback must be an iexact.CompressionConfig or None, got {type(fallback).__name__}")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn must be callable as filter_fn(module, name), got {type(filter_fn).__name__}")


def _convert(module: torch.nn.Module, config: CompressionConfig, seeds: SeedStream, owned: set[int]) -> str | None:
    """Switch ``module`` to its compressed class when a handler takes it as it
    is set (adding the children the handler computes to ``owned``); otherwise
    say why, if it may keep activations of its own (``None`` if not)."""
    base = original_class(module)
    handler = HANDLERS.get(base)
    if handler is None:
        return base.__name__ if _may_keep_activations(module) else None
    reason = handler.unsupported(module) or lazy_reason(module, handler)
    if reason is not None:
        module.__class__ = base
        return f"{base.__name__}, {reason}"
    _switch(module, handler, config, seeds)
    owned.update(id(child) for child in handler.owned(module))
    return None


def _switch(module: torch.nn.Module, handler: type[CompressedModule], config: CompressionConfig, seeds: SeedStream):
    """Give ``module`` the compressed class of ``handler`` and its base, with ``config`` and ``seeds``."""
    module.__class__ = compressed_class(handler, original_class(module))
    converted = cast(CompressedModule, module)
    converted.iexact_config, converted.iexact_seeds = config, seeds


def module_configs(model: torch.nn.Module) -> dict[str, CompressionConfig]:
    """The config of every compressed module of ``model``, by name, in module order."""
    return {name: module.iexact_config for name, module in model.named_modules() if is_compressed(module)}


def configure_(model: torch.nn.Module, configs: Mapping[str, CompressionConfig]) -> torch.nn.Module:
    """Give the named compressed modules of ``model`` configs of their own (a
    per-layer plan such as :func:`iexact.plan_memory` makes); the others keep
    theirs. Returns ``model``.

    Raises:
        ValueError: a name that is no compressed module of ``model`` (the
            compressed ones are named).
        TypeError: a value that is no :class:`CompressionConfig`.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(configs, Mapping):
        raise TypeError(f"configs must map module names to configs, got {type(configs).__name__}")
    modules = dict(model.named_modules())
    for name, config in configs.items():
        module = modules.get(name)
        if module is None or not is_compressed(module):
            known = ", ".join(n for n, m in modules.items() if is_compressed(m)) or "none"
            raise ValueError(f"{name!r} is no compressed module of this model; the compressed ones: {known}")
        if not isinstance(config, CompressionConfig):
            raise TypeError(f"the config for {name!r} must be an iexact.CompressionConfig, got {type(config).__name__}")
    for name, config in configs.items():
        modules[name].iexact_config = config
    return model


def restore_(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`compress_` in place: every converted module gets its own class
    back (parameters, buffers and the user's hooks were never touched), and the
    model loses the hooks that read its finite checks once per forward
    (:mod:`iexact.nn.finite_checks`), publish what its caller holds
    (:mod:`iexact.nn.held`) and share its graphs' normalizations
    (:mod:`iexact.nn.shared_graphs`). Returns ``model``."""
    unlink_activations_(model)
    unwatch_finite_checks_(model)
    unwatch_held_(model)
    unwatch_shared_graphs_(model)
    unwatch_model_code_(model)
    for module in model.modules():
        if isinstance(module, CompressedModule):
            base = module.iexact_base
            del module.iexact_config, module.iexact_seeds
            module.__class__ = base
    return model


def seed_streams(model: torch.nn.Module) -> list[SeedStream]:
    """The distinct :class:`~iexact.seeds.SeedStream` objects of ``model``'s converted
    modules (one per :func:`compress_` call), in module order: checkpoint their
    ``get_state()`` for a bit-exact resume."""
    streams: list[SeedStream] = []
    for module in model.modules():
        stream = getattr(module, "iexact_seeds", None) if is_compressed(module) else None
        if stream is not None and all(stream is not known for known in streams):
            streams.append(stream)
    return streams
