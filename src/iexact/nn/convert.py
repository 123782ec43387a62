r"""``compress_``: convert a model's modules in place."""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch_geometric.nn import GATConv, GCN2Conv, GCNConv, GINConv, MessagePassing, SAGEConv
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..config import CompressionConfig
from .conv import GATConvMixin, GCN2ConvMixin, GCNConvMixin, GINConvMixin, SAGEConvMixin
from .layers import (
    CompressedModule,
    DropoutMixin,
    ELUMixin,
    LeakyReLUMixin,
    LinearMixin,
    ReLUMixin,
    compressed_class,
)
from .norm import BatchNormMixin

_MIXINS = {
    torch.nn.Linear: LinearMixin,
    PyGLinear: LinearMixin,
    torch.nn.BatchNorm1d: BatchNormMixin,
    torch.nn.ReLU: ReLUMixin,
    torch.nn.LeakyReLU: LeakyReLUMixin,
    torch.nn.ELU: ELUMixin,
    torch.nn.Dropout: DropoutMixin,
    GCNConv: GCNConvMixin,
    SAGEConv: SAGEConvMixin,
    GCN2Conv: GCN2ConvMixin,
    GINConv: GINConvMixin,
    GATConv: GATConvMixin,
}

# modules that keep no activation of their own for backward
_STATELESS = (torch.nn.Identity, torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def _may_keep_activations(module: torch.nn.Module) -> bool:
    """Whether an unconverted ``module`` may save activations of its own: a
    message-passing layer, an activation, or a leaf holding parameters."""
    if isinstance(module, _STATELESS):
        return False
    if isinstance(module, MessagePassing) or type(module).__module__ == torch.nn.modules.activation.__name__:
        return True
    return not any(module.children()) and any(True for _ in module.parameters(recurse=False))


def is_compressed(module: torch.nn.Module) -> bool:
    """Whether ``module`` was converted by :func:`compress_`."""
    return isinstance(module, CompressedModule)


def _original_class(module: torch.nn.Module) -> type:
    return module.iexact_base if isinstance(module, CompressedModule) else type(module)


def compress_(
    model: torch.nn.Module,
    config: CompressionConfig,
    filter_fn: Callable[[torch.nn.Module, str], bool] | None = None,
) -> torch.nn.Module:
    r"""Make ``model`` keep compressed activations for backward, in place.

    Converts ``torch.nn.Linear``, PyG's ``Linear``, ``BatchNorm1d`` (and so PyG's
    ``BatchNorm``, which wraps one), ``ReLU``, ``LeakyReLU``, ``ELU``,
    ``Dropout``, and PyG's ``GCNConv``, ``SAGEConv``, ``GCN2Conv``, ``GINConv``
    and ``GATConv`` by switching each one's class to a compressed subclass
    (:mod:`iexact.nn.layers`): parameter objects, names and ``state_dict`` are
    unchanged, and an optimizer created before the call keeps working. Calling
    it again updates the config. A supported module in a setting that is not
    compressed (say ``SAGEConv(aggr="max")``) and any other leaf module that
    holds parameters (and so may save activations) are named in a warning.

    Args:
        model (torch.nn.Module): the model, changed in place.
        config (CompressionConfig): how to compress.
        filter_fn (callable, optional): ``filter_fn(module, name)`` returns
            ``False`` to leave a module as it is. (default: :obj:`None`)

    Returns:
        ``model``.
    """
    if not isinstance(config, CompressionConfig):
        raise TypeError(f"config must be an iexact.CompressionConfig, got {type(config).__name__}")
    skipped = []
    for name, module in model.named_modules():
        base = _original_class(module)
        mixin = _MIXINS.get(base)
        if filter_fn is not None and not filter_fn(module, name):
            continue
        if mixin is None:
            if _may_keep_activations(module):
                skipped.append(f"{name or '<model>'} ({base.__name__})")
            continue
        reason = mixin.unsupported(module)
        if reason is not None:
            if is_compressed(module):
                module.__class__ = base
            skipped.append(f"{name or '<model>'} ({base.__name__}, {reason})")
            continue
        module.__class__ = compressed_class(mixin, base)
        module.iexact_config = config
    if skipped:
        warnings.warn(
            "iexact.compress_ left these modules uncompressed; their saved activations stay "
            "full precision: " + ", ".join(skipped),
            stacklevel=2,
        )
    return model
