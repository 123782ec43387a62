r"""A compression plan for an activation-memory budget: :func:`plan_memory`.

Given a model, one batch and a budget of bytes, choose for every compressed
module its bits, block size and projection ratio (each from :data:`BITS`,
:data:`BLOCK_SIZES` and :data:`RP_RATIOS`; the other fields are the base
config's) so that the activation memory fits the budget with the least
predicted gradient error.

**Bytes.** For each candidate config :math:`c`, one training forward of the
model with every module at :math:`c` is observed
(:func:`~iexact.analysis.observe_compressions`): each tensor a module
compresses, with the config it is compressed with. Its bytes are the codec's
arithmetic on its shape (:func:`~iexact.codec.stored_bytes`). What a module
keeps besides (sign bits, seeds, dropout's generator snapshots, :math:`1/\sigma`,
tensors saved uncompressed) does not depend on the config: it is what
:func:`~iexact.activation_memory` counts with the base config less those
tensors. A plan's bytes are the sum over its modules.

A module under the saved-tensor fallback (:mod:`iexact.nn.fallback`) takes
the candidates' bits (at least 4) and block sizes, never a projection.

**Error.** Let :math:`e_m(c) = \sum \lVert \hat x - x \rVert^2` over the
tensors module :math:`m` compresses with :math:`c` (:math:`\hat x` decompressed
from what the observed forward stored). To
first order the gradients are linear in the errors of the saved tensors, and
those errors are independent across modules, so squared relative gradient
errors add up:

.. math::
    \varepsilon^2 \approx \sum_m s_m\, e_m(c_m), \qquad
    s_m = \varepsilon_m^2(c_0) / e_m(c_0),

:math:`\varepsilon_m(c_0)` being :func:`~iexact.gradient_error` with only
:math:`m` compressed, with the base config :math:`c_0`.

**Choice.** Minimizing :math:`\sum_m s_m e_m(c_m)` with the bytes within the
budget is a multiple-choice knapsack, solved exactly on the Pareto frontier
of (bytes, error), one module at a time.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence

import torch

from .analysis import cuda_devices, gradient_error, observe_compressions
from .codec import stored_bytes
from .config import CompressionConfig
from .memory import activation_memory, format_bytes
from .nn import compress_, configure_, is_compressed, original_class, restore_
from .nn.fallback import FallbackHandler
from .ops.codec import decompress

BITS = (1, 2, 4, 8)
BLOCK_SIZES = (64, 128, 256, 1024)
RP_RATIOS = (1, 2, 4, 8)


class PlanError(ValueError):
    """No plan fits the budget; ``smallest`` is the least activation memory a plan needs."""

    def __init__(self, message: str, smallest: int):
        super().__init__(message)
        self.smallest = smallest


@dataclasses.dataclass(frozen=True)
class ModulePlan:
    r"""The config chosen for one compressed module, and what it is predicted to cost.

    Attributes:
        name (str): the module's name in the model.
        kind (str): its class (before conversion).
        config (CompressionConfig): the config chosen.
        bytes (int): predicted bytes it keeps for backward.
        squared_error (float): its share :math:`s_m e_m(c_m)` of the
            predicted squared relative gradient error.
    """

    name: str
    kind: str
    config: CompressionConfig
    bytes: int
    squared_error: float


@dataclasses.dataclass(frozen=True)
class UniformPlan:
    """The best single candidate config for every module within the budget."""

    config: CompressionConfig
    bytes: int
    gradient_error: float


@dataclasses.dataclass(frozen=True)
class Plan:
    r"""A config per compressed module that fits an activation-memory budget.

    Compress the model with ``base`` and give the modules their configs
    (:func:`iexact.nn.configure_`): :meth:`apply_` does both.

    Attributes:
        base (CompressionConfig): the config the plan starts from.
        modules (tuple): a :class:`ModulePlan` per module that compresses
            anything, in forward order.
        fixed (dict): bytes the other modules keep whatever the configs
            (ReLU's sign bits, dropout's generator snapshots, tensors saved
            uncompressed), by module name.
        budget (int): the budget in bytes.
        fp32_bytes (int): what the uncompressed model keeps.
        uniform (UniformPlan or None): the best single candidate for every
            module within the budget, for comparison (``None``: none fits).
    """

    base: CompressionConfig
    modules: tuple[ModulePlan, ...]
    fixed: dict[str, int]
    budget: int
    fp32_bytes: int
    uniform: UniformPlan | None

    @property
    def bytes(self) -> int:
        """Predicted activation memory: what :func:`iexact.activation_memory` should count."""
        return sum(module.bytes for module in self.modules) + sum(self.fixed.values())

    @property
    def gradient_error(self) -> float:
        r"""Predicted relative gradient error against FP32, :math:`\sqrt{\sum_m s_m e_m(c_m)}`."""
        return math.sqrt(sum(module.squared_error for module in self.modules))

    def configs(self) -> dict[str, CompressionConfig]:
        """The chosen config by module name."""
        return {module.name: module.config for module in self.modules}

    def apply_(self, model: torch.nn.Module) -> torch.nn.Module:
        """Compress ``model`` (uncompressed, built as the planned one) as planned, in place."""
        return configure_(compress_(model, self.base), self.configs())


def candidate_configs(base: CompressionConfig) -> list[CompressionConfig]:
    """``base`` and every combination of :data:`BITS`, :data:`BLOCK_SIZES` and
    :data:`RP_RATIOS` with ``base``'s other fields, each once."""
    grid = [
        dataclasses.replace(base, bits=bits, block_size=block, rp_ratio=ratio)
        for bits in BITS
        for block in BLOCK_SIZES
        for ratio in RP_RATIOS
    ]
    return list(dict.fromkeys([base, *grid]))


def _for_module(config: CompressionConfig, fallback: bool) -> CompressionConfig:
    """``config`` as a module takes it: a module under the saved-tensor fallback
    never projects (what it saves need not enter a product) and keeps at least
    4 bits (at 2 the softmax backwards it saves for show bias: the
    documentation's results page measures it)."""
    return dataclasses.replace(config, rp_ratio=1, bits=max(config.bits, 4)) if fallback else config


def _costs(model: torch.nn.Module, inputs, kwargs, names: dict) -> dict[str, list]:
    """``{name: [bytes, noise]}`` of each compressed module in one observed
    training forward: the stored bytes of what it compresses (from the shapes),
    and :math:`\\sum \\lVert \\hat x - x \\rVert^2` of each tensor against what was stored."""
    costs: dict[str, list] = {}

    def record(owners, x, seed, config, stored) -> None:
        owner = next((module for module in reversed(owners) if is_compressed(module)), model)
        estimate = decompress(stored)
        row = costs.setdefault(names[owner], [0, 0.0])
        row[0] += stored_bytes(x.shape, config)
        row[1] += torch.sub(estimate, x).square().sum(dtype=torch.float64).item()

    observe_compressions(model, inputs, kwargs, record)
    return costs


def _sensitivity(
    reference: torch.nn.Module,
    name: str,
    base: CompressionConfig,
    noise: float,
    inputs,
    kwargs,
    loss_fn,
    draws: int,
    seed: int,
) -> float:
    """:math:`s_m`: squared gradient error per unit noise with only module ``name`` compressed."""
    if noise == 0:
        return 0.0
    with warnings.catch_warnings():  # every other module is left out on purpose
        warnings.simplefilter("ignore", UserWarning)
        alone = compress_(copy.deepcopy(reference), base, filter_fn=lambda module, other: other == name)
    error = gradient_error(alone, *inputs, loss_fn=loss_fn, draws=draws, seed=seed, **kwargs)
    return error.whole**2 / noise


def least_error_within(options: list[list[tuple[int, float]]], capacity: int) -> tuple[int, ...] | None:
    """One option index per module minimizing the summed error with summed bytes
    at most ``capacity``, each option being ``(bytes, error)``; ``None`` when
    nothing fits. Exact: the Pareto frontier of (bytes, error) is merged one
    module at a time, keeping only points no other point beats on both."""
    frontier: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for module_options in options:
        merged = sorted(
            (nbytes + extra, error + more, picks + (index,))
            for nbytes, error, picks in frontier
            for index, (extra, more) in enumerate(module_options)
            if nbytes + extra <= capacity
        )
        frontier, best = [], math.inf
        for point in merged:
            if point[1] < best:
                frontier.append(point)
                best = point[1]
        if not frontier:
            return None
    return frontier[-1][2]


def plan_memory(
    model: torch.nn.Module,
    *inputs,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    budget: int,
    base: CompressionConfig | None = None,
    candidates: Sequence[CompressionConfig] | None = None,
    draws: int = 4,
    seed: int = 0,
    **kwargs,
) -> Plan:
    r"""The configs per module that keep ``model``'s activations on ``inputs``
    within ``budget`` bytes with the least predicted gradient error (see the
    module's documentation for the prediction).

    ``model`` (compressed or not) and torch's generator are left as they were;
    the measurements run on copies, in training mode.

    Args:
        model (torch.nn.Module): the model.
        *inputs: one batch, the positional arguments to call it with.
        **kwargs: the keyword arguments to call it with.
        loss_fn (callable): output -> scalar loss (for the gradient error).
        budget (int): activation memory allowed, in bytes, as
            :func:`iexact.activation_memory` counts it.
        base (CompressionConfig, optional): the fields not planned (levels,
            projection kind, scale dtype, ``rp_norm``) and the config the
            sensitivities are measured with. (default: :obj:`CompressionConfig()`)
        candidates (sequence of CompressionConfig, optional): the configs a
            module may get. (default: :func:`candidate_configs` of ``base``)
        draws (int, optional): compressed backward passes per sensitivity. (default: :obj:`4`)
        seed (int, optional): torch seed of every pass (the dropout masks). (default: :obj:`0`)

    Returns:
        :class:`Plan`.

    Raises:
        PlanError: no candidate plan fits ``budget``; the message and
            ``smallest`` give the least memory a plan needs.
        ValueError: ``base`` has explicit levels (they fix the bits), or
            ``model`` compresses nothing.
    """
    base = CompressionConfig() if base is None else base
    _check_arguments(model, loss_fn, budget, base)
    candidates = candidate_configs(base) if candidates is None else list(candidates)
    if not candidates or not all(isinstance(config, CompressionConfig) for config in candidates):
        raise ValueError("candidates must be a non-empty sequence of iexact.CompressionConfig")
    with torch.random.fork_rng(devices=cuda_devices(inputs, kwargs)):  # dropout draws in every forward
        return _plan(model, inputs, kwargs, loss_fn, budget, base, candidates, draws, seed)


def _check_arguments(model, loss_fn, budget, base) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output), got {type(loss_fn).__name__}")
    if not isinstance(base, CompressionConfig):
        raise TypeError(
            f"base must be an iexact.CompressionConfig (iexact.PRESETS[name] for a preset), got {type(base).__name__}"
        )
    if isinstance(base.levels, tuple):
        raise ValueError(
            "plan_memory varies the bits, which explicit levels fix: give the base config "
            "levels by kind (uniform, optimal or calibrated)"
        )
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget={budget!r} is invalid: budget must be a whole number of bytes (an int) >= 0")


def _plan(model, inputs, kwargs, loss_fn, budget, base, candidates, draws, seed) -> Plan:
    reference = restore_(copy.deepcopy(model)).train()
    fp32_bytes = activation_memory(reference, *inputs, **kwargs).total
    compressed = compress_(copy.deepcopy(reference), base)
    names = {module: name or "(model)" for name, module in compressed.named_modules()}
    kinds = {name: original_class(module).__name__ for module, name in names.items()}
    kept = {layer.name: layer.total for layer in activation_memory(compressed, *inputs, **kwargs).layers}
    converted = [name for module, name in names.items() if is_compressed(module)]
    fallbacks = {name for module, name in names.items() if isinstance(module, FallbackHandler)}
    at_base = _costs(compressed, inputs, kwargs, names)  # as compress_ left it: the fallback at its own config
    observed = {}  # one observed forward per distinct candidate
    for config in dict.fromkeys(candidates):
        configure_(compressed, {name: _for_module(config, name in fallbacks) for name in converted})
        observed[config] = _costs(compressed, inputs, kwargs, names)
    if not at_base:
        raise ValueError("the model compresses nothing on these inputs: there is nothing to plan")
    others = {name: kept.get(name, 0) - nbytes for name, (nbytes, _) in at_base.items()}  # sign bits, seeds ...
    fixed = {name: nbytes for name, nbytes in kept.items() if name not in at_base}
    costs = {name: [observed[config].get(name, (0, 0.0)) for config in candidates] for name in at_base}
    smallest = sum(fixed.values()) + sum(min(nbytes for nbytes, _ in row) + others[name] for name, row in costs.items())
    if budget < smallest:  # before the sensitivities, the costly part
        raise PlanError(
            f"no plan keeps the activations within {format_bytes(budget, exact=True)}: the smallest keeps "
            f"{format_bytes(smallest, exact=True)}, "
            f"{format_bytes(sum(fixed.values()) + sum(others.values()), exact=True)} of it whatever the configs "
            f"(sign bits, dropout's generator snapshots, attention weights, tensors saved uncompressed); "
            f"FP32 keeps {format_bytes(fp32_bytes, exact=True)}",
            smallest,
        )
    sensitivity = {
        name: _sensitivity(reference, name, base, noise, inputs, kwargs, loss_fn, draws, seed)
        for name, (_, noise) in at_base.items()
    }
    options = [
        [(nbytes + others[name], sensitivity[name] * noise) for nbytes, noise in row] for name, row in costs.items()
    ]
    picks = least_error_within(options, budget - sum(fixed.values()))
    assert picks is not None  # the budget holds the smallest choice of every module
    modules = tuple(
        ModulePlan(name, kinds[name], _for_module(candidates[pick], name in fallbacks), *options[index][pick])
        for index, (name, pick) in enumerate(zip(at_base, picks, strict=True))
    )
    uniform = None
    for column, config in enumerate(candidates):
        nbytes = sum(choices[column][0] for choices in options) + sum(fixed.values())
        error = math.sqrt(sum(choices[column][1] for choices in options))
        if nbytes <= budget and (uniform is None or error < uniform.gradient_error):
            uniform = UniformPlan(config, nbytes, error)
    return Plan(base, modules, fixed, budget, fp32_bytes, uniform)
