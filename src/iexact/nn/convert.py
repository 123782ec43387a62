r"""``compress_``: convert a model's modules in place."""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..config import CompressionConfig
from .layers import CompressedModule, DropoutMixin, LeakyReLUMixin, LinearMixin, ReLUMixin, compressed_class

_MIXINS = {
    torch.nn.Linear: LinearMixin,
    PyGLinear: LinearMixin,
    torch.nn.ReLU: ReLUMixin,
    torch.nn.LeakyReLU: LeakyReLUMixin,
    torch.nn.Dropout: DropoutMixin,
}

# leaf modules that keep no activation of their own for backward
_STATELESS = (torch.nn.Identity,)


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

    Converts ``torch.nn.Linear``, PyG's ``Linear``, ``ReLU``, ``LeakyReLU`` and
    ``Dropout`` modules by switching each one's class to a compressed subclass
    (:mod:`iexact.nn.layers`): parameter objects, names and ``state_dict`` are
    unchanged, and an optimizer created before the call keeps working. Calling
    it again updates the config. Any other leaf module that holds parameters
    (and so may save activations) is named in a warning.

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
            if not any(module.children()) and not isinstance(module, _STATELESS) \
                    and any(True for _ in module.parameters(recurse=False)):
                skipped.append(f"{name or '<model>'} ({base.__name__})")
            continue
        if isinstance(getattr(module, "weight", None), torch.nn.parameter.UninitializedParameter):
            skipped.append(f"{name} ({base.__name__}, lazy: run one forward pass before compress_)")
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
