r"""Calibrated levels: each module's levels fitted to what it compresses.

:func:`calibrate_` fits them in one observed training forward,
:func:`calibration_state` and :func:`load_calibration_state_` carry them
beside a ``state_dict``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..codec import normalized_values, stored_sizes
from ..config import CompressionConfig
from ..nn import CompressedModule, configure_, is_compressed, module_configs
from ..quant import fit_levels, levels_for
from .observe import observe_compressions

CALIBRATION_SAMPLE = 2**20  # normalized values kept per tensor to fit levels to


def even_sample(u: torch.Tensor, size: int) -> torch.Tensor:
    """Every ``ceil(n / size)``-th value: an even sample that needs no random draw."""
    return u[:: max(1, math.ceil(u.numel() / size))]


def calibrate_(model: torch.nn.Module, *inputs, **kwargs) -> dict[str, tuple[float, ...]]:
    r"""Fit the levels of every compressed module whose config says
    ``levels="calibrated"`` to what it compresses in one training forward of
    ``model(*inputs, **kwargs)`` (all of a module's tensors together, an even
    sample of up to :data:`CALIBRATION_SAMPLE` values each), and give it a
    config with those levels (:func:`~iexact.quant.levels.fit_levels`, from
    the optimal levels: never a higher rounding variance on that data; any
    increasing levels keep the rounding unbiased). The forward leaves torch's
    generator and the seed streams where they were; parameters are untouched.

    The levels live in each module's ``iexact_config``: pickling the model keeps
    them; a ``state_dict`` does not, so save :func:`calibration_state` beside
    it and restore with :func:`load_calibration_state_`.

    Returns:
        the fitted levels by module name.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = {module: name for name, module in model.named_modules()}
    observed: dict[CompressedModule, list] = {}

    def record(owners, x, seed, config, stored) -> None:
        owner = next((m for m in reversed(owners) if is_compressed(m)), None)
        if owner is None or owner.iexact_config.levels != "calibrated":
            return
        u = normalized_values(x, config, seed)
        block_size = stored_sizes(x.shape, config)[1]
        observed.setdefault(owner, []).append((even_sample(u, CALIBRATION_SAMPLE).cpu().numpy(), block_size))

    observe_compressions(model, inputs, kwargs, record)
    fitted = {}
    for module, samples in observed.items():
        config = module.iexact_config
        start = levels_for("optimal", config.bits, samples[0][1])
        levels = fit_levels(np.concatenate([sample for sample, _ in samples]), config.bits, start)
        module.iexact_config = dataclasses.replace(config, levels=levels)
        fitted[names[module]] = levels
    return fitted


def calibration_state(model: torch.nn.Module) -> dict[str, list[float]]:
    """The fitted levels of every calibrated module, by name (JSON-ready)."""
    return {
        name: list(config.levels) for name, config in module_configs(model).items() if isinstance(config.levels, tuple)
    }


def load_calibration_state_(model: torch.nn.Module, state: dict) -> torch.nn.Module:
    """Give the named modules the levels :func:`calibration_state` saved
    (through :func:`iexact.nn.configure_`).

    Raises:
        ValueError: a name that is no compressed module of ``model``, or invalid levels.
    """
    current = module_configs(model)
    fallback = CompressionConfig()  # for a name configure_ refuses
    return configure_(
        model,
        {
            name: dataclasses.replace(current.get(name, fallback), levels=tuple(levels))
            for name, levels in state.items()
        },
    )
