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
keeps besides (sign bits, seeds, dropout's masks or generator snapshots, :math:`1/\sigma`,
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

:math:`\varepsilon_m(c_0)` being :func:`~iexact.gradient_error` with
:math:`m` at the base config :math:`c_0` (a module under the saved-tensor
fallback at its own config, where its noise :math:`e_m` was observed) and
every other module at 8 bits without projection: measured in context, the whole model converted (a
module's stored tensors can depend on its parent's conversion).

**Choice.** Minimizing :math:`\sum_m s_m e_m(c_m)` with the bytes within the
budget is a multiple-choice knapsack, solved exactly on the Pareto frontier
of (bytes, error), one module at a time.

**An error target instead** (``max_error``): the least bytes whose error is
within it, from the same frontier, but measured before it is trusted
(:func:`verified_least_bytes`): the first-order sum underestimates where a
module's gradient is not linear in its noise (attention at 1 bit) and where
errors compound across modules, so each pick's error is measured in context
and the plan's whole, and the target tightened by the overshoot until the
plan measures within it. On PyG's model zoo (``iexact bench memory --models
--max-error 0.8``) every family then measures within 0.8.
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
from .nn import compress_, configure_, is_compressed, module_configs, original_class, restore_
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
    r"""A config per compressed module that fits an activation-memory budget
    (or keeps the least memory within a gradient-error target).

    Compress the model with ``base`` and give the modules their configs
    (:func:`iexact.nn.configure_`): :meth:`apply_` does both.

    Attributes:
        base (CompressionConfig): the config the plan starts from.
        modules (tuple): a :class:`ModulePlan` per module that compresses
            anything, in forward order.
        fixed (dict): bytes the other modules keep whatever the configs
            (ReLU's sign bits, dropout's masks or generator snapshots, tensors saved
            uncompressed), by module name.
        budget (int or None): the budget in bytes (``None``: planned for ``max_error``).
        fp32_bytes (int): what the uncompressed model keeps.
        uniform (UniformPlan or None): the best single candidate for every
            module within the budget (or, for ``max_error``, the smallest
            within it), for comparison (``None``: none fits).
        max_error (float or None): the gradient error the plan was held to,
            with the least bytes (``None``: planned for ``budget``).
        measured_error (float or None): for ``max_error``, the plan's
            :func:`iexact.gradient_error` as the planner measured it (its
            ``draws``), at most ``max_error``.
    """

    base: CompressionConfig
    modules: tuple[ModulePlan, ...]
    fixed: dict[str, int]
    budget: int | None
    fp32_bytes: int
    uniform: UniformPlan | None
    max_error: float | None = None
    measured_error: float | None = None

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
    and :math:`\\sum \\lVert \\hat x - x \\rVert^2` of each tensor against what was stored.
    What the model's own code compresses (:mod:`iexact.nn.model_code`) is no
    module's: it stays at its config, among the plan's fixed bytes."""
    costs: dict[str, list] = {}

    def record(owners, x, seed, config, stored) -> None:
        owner = next((module for module in reversed(owners) if is_compressed(module)), None)
        if owner is None:
            return
        estimate = decompress(stored)
        row = costs.setdefault(names[owner], [0, 0.0])
        row[0] += stored_bytes(x.shape, config)
        row[1] += torch.sub(estimate, x).square().sum(dtype=torch.float64).item()

    observe_compressions(model, inputs, kwargs, record)
    return costs


def _alone_squared_error(
    reference, base: CompressionConfig, name: str, config, inputs, kwargs, loss_fn, draws: int, seed: int
) -> float:
    r""":math:`\varepsilon_m^2(c)`: the squared relative gradient error with
    module ``name`` at ``config`` and every other converted module at 8 bits
    without projection (an error near 0.004): the model converted whole with
    ``base``, so that each module stores what it stores in the plan (a module
    whose input a converted parent makes, like an ``EdgeConv``'s MLP, would
    keep it by reference were the parent left stock)."""
    with warnings.catch_warnings():  # the fallback's warning, on every measurement
        warnings.simplefilter("ignore", UserWarning)
        model = compress_(copy.deepcopy(reference), base)
    near_exact = dataclasses.replace(config, bits=8, rp_ratio=1)
    configure_(model, {other: config if other == name else near_exact for other in module_configs(model)})
    error = gradient_error(model, *inputs, loss_fn=loss_fn, draws=draws, seed=seed, **kwargs)
    return error.whole**2


def _frontier(
    options: list[list[tuple[int, float]]], capacity: float, error_cap: float
) -> list[tuple[int, float, tuple[int, ...]]]:
    """The Pareto frontier of (summed bytes, summed error, one option index per
    module) over every choice within ``capacity`` bytes and ``error_cap``
    summed error, each option being ``(bytes, error)``: ascending bytes,
    descending error. Exact: merged one module at a time, keeping only
    points no other point beats on both (bytes and errors only grow as
    modules are added, so a point over either cap is dropped at once)."""
    frontier: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for module_options in options:
        merged = sorted(
            (nbytes + extra, error + more, picks + (index,))
            for nbytes, error, picks in frontier
            for index, (extra, more) in enumerate(module_options)
            if nbytes + extra <= capacity and error + more <= error_cap
        )
        frontier, best = [], math.inf
        for point in merged:
            if point[1] < best:
                frontier.append(point)
                best = point[1]
        if not frontier:
            break
    return frontier


def least_error_within(options: list[list[tuple[int, float]]], capacity: float) -> tuple[int, ...] | None:
    """One option index per module minimizing the summed error with summed bytes
    at most ``capacity``, each option being ``(bytes, error)``; ``None`` when
    nothing fits (:func:`_frontier`'s last point: the least error)."""
    frontier = _frontier(options, capacity, math.inf)
    return frontier[-1][2] if frontier else None


def least_bytes_within(options: list[list[tuple[int, float]]], error_cap: float) -> tuple[int, ...] | None:
    """One option index per module minimizing the summed bytes with summed error
    at most ``error_cap``; ``None`` when no choice is that accurate
    (:func:`_frontier`'s first point: the least bytes)."""
    frontier = _frontier(options, math.inf, error_cap)
    return frontier[0][2] if frontier else None


VERIFY_ROUNDS = 6  # plans measured whole by verified_least_bytes before it gives up


def verified_least_bytes(
    options: list[list[tuple[int, float]]],
    error_cap: float,
    measure: Callable[[int, int], float],
    measure_whole: Callable[[tuple[int, ...]], float],
) -> tuple[tuple[int, ...], float] | None:
    r""":func:`least_bytes_within`, checked by measurement: ``measure(module,
    option)`` is one module's error alone and ``measure_whole(picks)`` the
    plan's, on the options' (squared) scale.

    The prediction adds the modules' errors, each first order in its stored
    tensors' noise. Both assumptions fail somewhere: a module's gradient may
    not be linear in the noise (attention's softmax of two compressed
    factors at 1 bit), and errors compound across modules whose backward
    reads their own stored tensors (a noisy :math:`dY` times a noisy
    :math:`\hat X`). So each round corrects the picks' predictions by their
    measurements (:func:`_corrected`), chooses, measures the plan whole, and
    if it is over ``error_cap`` divides the cap by the plan's measured
    underestimate (measured over predicted) and
    chooses again: at most :data:`VERIFY_ROUNDS` rounds. Returns the picks
    and their measured (squared) error, ``None`` when no plan was measured
    within the cap; ``options`` are left corrected."""
    measured: set[tuple[int, int]] = set()
    cap = error_cap
    for _ in range(VERIFY_ROUNDS):
        picks = _least_bytes_or_error(options, cap)
        while _corrected(options, picks, measured, measure):
            picks = _least_bytes_or_error(options, cap)
        whole = measure_whole(picks)
        if whole <= error_cap:
            return picks, whole
        if least_bytes_within(options, cap) is None:  # the most accurate plan was measured, and is over
            return None
        predicted = sum(options[module][pick][1] for module, pick in enumerate(picks))
        cap = min(cap, error_cap * predicted / whole)  # the sum's underestimate, as measured on this plan
    return None


def _least_bytes_or_error(options, cap: float) -> tuple[int, ...]:
    """:func:`least_bytes_within` ``cap``, or the most accurate choice where none is predicted within it."""
    picks = least_bytes_within(options, cap)
    if picks is None:
        picks = least_error_within(options, math.inf)
    assert picks is not None  # every module has an option
    return picks


def _corrected(options, picks: tuple[int, ...], measured: set, measure) -> bool:
    """Put the measured error of each pick not yet measured in place of its
    prediction, scaling that module's noisier options (predicted error at
    least the pick's) by the same underestimate; whether any was new."""
    fresh = [(module, pick) for module, pick in enumerate(picks) if (module, pick) not in measured]
    for module, pick in fresh:
        predicted, truth = options[module][pick][1], measure(module, pick)
        factor = truth / predicted if predicted > 0 else 1.0
        options[module] = [
            (nbytes, error * factor if factor > 1 and error >= predicted and (module, j) not in measured else error)
            for j, (nbytes, error) in enumerate(options[module])
        ]
        options[module][pick] = (options[module][pick][0], truth)
        measured.add((module, pick))
    return bool(fresh)


def plan_memory(
    model: torch.nn.Module,
    *inputs,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    budget: int | None = None,
    base: CompressionConfig | None = None,
    candidates: Sequence[CompressionConfig] | None = None,
    draws: int = 4,
    seed: int = 0,
    max_error: float | None = None,
    **kwargs,
) -> Plan:
    r"""The configs per module that keep ``model``'s activations on ``inputs``
    within ``budget`` bytes with the least predicted gradient error, or (with
    ``max_error`` instead) that keep the least bytes with a predicted
    gradient error of at most ``max_error`` (see the module's documentation
    for the prediction).

    ``model`` (compressed or not) and torch's generator are left as they were;
    the measurements run on copies, in training mode.

    Args:
        model (torch.nn.Module): the model.
        *inputs: one batch, the positional arguments to call it with.
        **kwargs: the keyword arguments to call it with.
        loss_fn (callable): output -> scalar loss (for the gradient error).
        budget (int, optional): activation memory allowed, in bytes, as
            :func:`iexact.activation_memory` counts it.
        max_error (float, optional): instead of ``budget``, the relative
            gradient error against FP32 allowed (:func:`iexact.gradient_error`'s
            ``whole``, predicted): the plan then keeps the least memory within it.
        base (CompressionConfig, optional): the fields not planned (levels,
            projection kind, scale dtype, ``rp_norm``, ``rp_edge_convs``) and the config the
            sensitivities are measured with. (default: :obj:`CompressionConfig()`)
        candidates (sequence of CompressionConfig, optional): the configs a
            module may get. (default: :func:`candidate_configs` of ``base``)
        draws (int, optional): compressed backward passes per sensitivity. (default: :obj:`4`)
        seed (int, optional): torch seed of every pass (the dropout masks). (default: :obj:`0`)

    Returns:
        :class:`Plan`.

    Raises:
        PlanError: no candidate plan fits ``budget`` (or is predicted within
            ``max_error``); the message and ``smallest`` give the least
            memory a plan needs.
        ValueError: not exactly one of ``budget`` and ``max_error``; ``base``
            has explicit levels (they fix the bits), or ``model`` compresses nothing.
    """
    base = CompressionConfig() if base is None else base
    _check_arguments(model, loss_fn, budget, base, max_error)
    candidates = candidate_configs(base) if candidates is None else list(candidates)
    if not candidates or not all(isinstance(config, CompressionConfig) for config in candidates):
        raise ValueError("candidates must be a non-empty sequence of iexact.CompressionConfig")
    with torch.random.fork_rng(devices=cuda_devices(inputs, kwargs)):  # dropout draws in every forward
        return _plan(model, inputs, kwargs, loss_fn, (budget, max_error), base, candidates, draws, seed)


def _check_arguments(model, loss_fn, budget, base, max_error) -> None:
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
    if (budget is None) == (max_error is None):
        raise ValueError("give plan_memory exactly one target: budget (bytes) or max_error (relative gradient error)")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise ValueError(f"budget={budget!r} is invalid: budget must be a whole number of bytes (an int) >= 0")
    if max_error is not None and (
        isinstance(max_error, bool) or not isinstance(max_error, (int, float)) or not 0 < max_error < math.inf
    ):
        raise ValueError(f"max_error={max_error!r} is invalid: max_error must be a finite number > 0")


def _plan(model, inputs, kwargs, loss_fn, target, base, candidates, draws, seed) -> Plan:
    budget, max_error = target
    reference = restore_(copy.deepcopy(model)).train()
    fp32_bytes = activation_memory(reference, *inputs, **kwargs).total
    compressed = compress_(copy.deepcopy(reference), base)
    names = {module: name or "(model)" for name, module in compressed.named_modules()}
    kinds = {name: original_class(module).__name__ for module, name in names.items()}
    kept = {layer.name: layer.total for layer in activation_memory(compressed, *inputs, **kwargs).layers}
    converted = [name for module, name in names.items() if is_compressed(module)]
    fallbacks = {name for module, name in names.items() if isinstance(module, FallbackHandler)}
    own = {name: module.iexact_config for module, name in names.items() if is_compressed(module)}  # as compress_ left
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
    if budget is not None and budget < smallest:  # before the sensitivities, the costly part
        raise PlanError(
            f"no plan keeps the activations within {format_bytes(budget, exact=True)}: the smallest keeps "
            f"{format_bytes(smallest, exact=True)}, "
            f"{format_bytes(sum(fixed.values()) + sum(others.values()), exact=True)} of it whatever the configs "
            f"(sign bits, dropout's masks or generator snapshots, attention weights, tensors saved uncompressed); "
            f"FP32 keeps {format_bytes(fp32_bytes, exact=True)}",
            smallest,
        )
    measured = _Measurements(reference, base, (inputs, kwargs, loss_fn, draws, seed), candidates, fallbacks, at_base)
    # s_m = eps_m^2 / e_m, both at the config the noise was observed at (base, or a fallback module's own)
    sensitivity = {
        name: measured.alone(name, own[name]) / noise if noise > 0 else 0.0 for name, (_, noise) in at_base.items()
    }
    options = [
        [(nbytes + others[name], sensitivity[name] * noise) for nbytes, noise in row] for name, row in costs.items()
    ]
    picks, measured_error = _choose(options, sum(fixed.values()), target, smallest, (measured.option, measured.whole))
    modules = tuple(
        ModulePlan(name, kinds[name], _for_module(candidates[pick], name in fallbacks), *options[index][pick])
        for index, (name, pick) in enumerate(zip(at_base, picks, strict=True))
    )
    uniform = _uniform(candidates, options, sum(fixed.values()), target)
    return Plan(base, modules, fixed, budget, fp32_bytes, uniform, max_error, measured_error)


class _Measurements:
    """The planner's gradient-error measurements of one model (squared, as
    the options hold them): a module alone at a config (each once), a module
    at a candidate's option, a whole plan."""

    def __init__(self, reference, base, setting: tuple, candidates, fallbacks: set, modules) -> None:
        self.reference, self.base, self.setting = reference, base, setting  # setting: inputs, kwargs, loss, draws, seed
        self.candidates, self.fallbacks, self.order = candidates, fallbacks, list(modules)
        self.known: dict[tuple[str, CompressionConfig], float] = {}

    def alone(self, name: str, config: CompressionConfig) -> float:
        """:func:`_alone_squared_error` of ``name`` at ``config``, measured once."""
        if (name, config) not in self.known:
            self.known[name, config] = _alone_squared_error(self.reference, self.base, name, config, *self.setting)
        return self.known[name, config]

    def option(self, module: int, option: int) -> float:
        """Module number ``module`` alone at candidate number ``option``."""
        name = self.order[module]
        return self.alone(name, _for_module(self.candidates[option], name in self.fallbacks))

    def whole(self, picks: tuple[int, ...]) -> float:
        """The plan of one candidate number per module, measured whole."""
        planned = {
            name: _for_module(self.candidates[pick], name in self.fallbacks)
            for name, pick in zip(self.order, picks, strict=True)
        }
        model = configure_(compress_(copy.deepcopy(self.reference), self.base), planned)
        inputs, kwargs, loss_fn, draws, seed = self.setting
        return gradient_error(model, *inputs, loss_fn=loss_fn, draws=draws, seed=seed, **kwargs).whole ** 2


def _choose(options, fixed_bytes: int, target: tuple, smallest: int, measure) -> tuple[tuple[int, ...], float | None]:
    """One option per module: the least error within the budget, or the least
    bytes within the error target (``target`` = ``(budget, max_error)``, one
    of them ``None``), the latter checked by ``measure`` (:func:`verified_least_bytes`,
    which corrects ``options``); and the error measured, if it was."""
    budget, max_error = target
    if budget is not None:
        picks = least_error_within(options, budget - fixed_bytes)
        assert picks is not None  # the budget holds the smallest choice of every module
        return picks, None
    verified = verified_least_bytes(options, max_error**2, *measure)
    if verified is None:
        raise PlanError(
            f"no plan was measured within a gradient error of {max_error:g} in {VERIFY_ROUNDS} rounds: allow a "
            f"larger error, or give candidates with more bits or no projection",
            smallest,
        )
    picks, squared = verified
    return picks, math.sqrt(squared)


def _uniform(candidates, options, fixed_bytes: int, target: tuple) -> UniformPlan | None:
    """The best single candidate for every module: the least error within the
    budget, or the least bytes within the error target."""
    budget, max_error = target
    best = None
    for column, config in enumerate(candidates):
        nbytes = sum(choices[column][0] for choices in options) + fixed_bytes
        error = math.sqrt(sum(choices[column][1] for choices in options))
        if budget is not None and nbytes <= budget and (best is None or error < best.gradient_error):
            best = UniformPlan(config, nbytes, error)
        if max_error is not None and error <= max_error and (best is None or nbytes < best.bytes):
            best = UniformPlan(config, nbytes, error)
    return best
