r"""What compression does: the gradients' error against FP32, and the data it rounds.

:func:`gradient_error` is the measurement every choice of projection, bits,
levels and block size is judged by. It trains nothing: it runs the model once
uncompressed and ``draws`` times compressed, in training mode, with the same
dropout masks (a converted model draws torch's own, see :mod:`iexact.seeds`),
and compares the gradients.

:func:`analyze_activations` looks at what a compressed model rounds: every
tensor one training forward compresses, on its blocks' normalized axis
(:func:`iexact.codec.normalized_values`), against the uniform, normal and
clipped-normal distributions (:func:`distribution_fits`), and its rounding
variance on the data against the clipped-normal model's prediction
(:func:`rounding_variance`, :func:`iexact.quant.levels.expected_variance`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode

from . import ops
from .codec import normalized_values, stored_sizes
from .config import CompressionConfig
from .nn import compress_, is_compressed, restore_, seed_streams
from .quant import clipped_normal_sigma, expected_variance, fit_levels, levels_for
from .seeds import seed_at

DISTRIBUTIONS = ("uniform", "normal", "clipped_normal")


@dataclasses.dataclass(frozen=True)
class GradientError:
    r"""Relative error of compressed gradients :math:`\hat g` against the FP32 ones :math:`g`.

    Attributes:
        whole (float): :math:`\lVert \hat g - g \rVert / \lVert g \rVert` over all
            parameters' gradients as one vector, averaged over the draws.
        per_parameter (dict): the same per parameter name (parameters whose FP32
            gradient is zero or absent are left out).
        of_mean (float): :math:`\lVert \bar{\hat g} - g \rVert / \lVert g \rVert` of the
            gradient averaged over the draws: falls like :math:`1/\sqrt{\text{draws}}`
            for an unbiased estimator, stalls at the bias otherwise.
        draws (int): compressed backward passes measured.
    """

    whole: float
    per_parameter: dict[str, float]
    of_mean: float
    draws: int

    def __str__(self) -> str:
        width = max([len(name) for name in self.per_parameter] + [5])
        lines = [f"{'parameter':<{width}}  relative error"]
        lines += [f"{name:<{width}}  {error:.4f}" for name, error in self.per_parameter.items()]
        lines.append(
            f"{'whole':<{width}}  {self.whole:.4f} (mean of {self.draws} draws; error of their mean {self.of_mean:.4f})"
        )
        return "\n".join(lines)


def cuda_devices(inputs, kwargs) -> list[int]:
    """The CUDA devices the tensors among ``inputs`` and ``kwargs`` are on (for ``fork_rng``)."""
    tensors = (*inputs, *kwargs.values())
    return sorted({t.device.index or 0 for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})


def _gradients(model: torch.nn.Module, inputs, kwargs, loss_fn, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks in every pass
    loss_fn(model(*inputs, **kwargs)).backward()
    return {name: p.grad.detach().double().flatten() for name, p in model.named_parameters() if p.grad is not None}


def gradient_error(
    model: torch.nn.Module,
    *inputs,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    config: CompressionConfig | None = None,
    draws: int = 8,
    seed: int = 0,
    **kwargs,
) -> GradientError:
    r"""Relative error of the gradients of ``model`` compressed with ``config``
    against its uncompressed twin's, on one batch.

    Both run in training mode on copies (``model`` itself, its mode and
    torch's global random state are left as they were), under
    ``torch.manual_seed(seed)`` so their dropout masks agree; the loss is
    ``loss_fn(model(*inputs, **kwargs))``. A compressed ``model`` is measured
    against its own uncompressed form.

    Args:
        model (torch.nn.Module): the model (compressed or not).
        *inputs, **kwargs: what to call it with.
        loss_fn (callable): output -> scalar loss.
        config (CompressionConfig, optional): the compression to measure;
            ``None`` measures ``model`` as it is compressed (each module with
            its own config, as :func:`iexact.nn.configure_` or a ``filter_fn``
            left it). (default: :obj:`None`)
        draws (int, optional): compressed backward passes, each with fresh
            compression noise. (default: :obj:`8`)
        seed (int, optional): torch seed of every pass. (default: :obj:`0`)

    Returns:
        :class:`GradientError`.
    """
    if draws < 1:
        raise ValueError(f"draws={draws!r} is invalid: draws must be >= 1")
    if config is None and not any(is_compressed(module) for module in model.modules()):
        raise ValueError(
            "gradient_error(config=None) measures the model as compressed, but no module of it "
            "is: pass the config to measure"
        )
    reference = restore_(copy.deepcopy(model)).train()
    compressed = copy.deepcopy(model).train() if config is None else compress_(copy.deepcopy(reference), config)
    devices = cuda_devices(inputs, kwargs)
    with torch.random.fork_rng(devices=devices):
        exact = _gradients(reference, inputs, kwargs, loss_fn, seed)
        samples = [_gradients(compressed, inputs, kwargs, loss_fn, seed) for _ in range(draws)]
    names = [name for name, grad in exact.items() if grad.norm() > 0]
    whole_exact = torch.cat([exact[name] for name in names])

    def relative(estimate: torch.Tensor, truth: torch.Tensor) -> float:
        return ((estimate - truth).norm() / truth.norm()).item()

    per_parameter = {name: sum(relative(sample[name], exact[name]) for sample in samples) / draws for name in names}
    wholes = [torch.cat([sample[name] for name in names]) for sample in samples]
    return GradientError(
        whole=sum(relative(estimate, whole_exact) for estimate in wholes) / draws,
        per_parameter=per_parameter,
        of_mean=relative(torch.stack(wholes).mean(0), whole_exact),
        draws=draws,
    )


@dataclasses.dataclass(frozen=True)
class Fit:
    """How far normalized values are from a distribution: the Kolmogorov-Smirnov
    statistic (largest CDF gap) and the Wasserstein-1 distance, both on [0, 1]."""

    ks: float
    wasserstein: float


def _clipped_normal_cdf(values: np.ndarray, spread: float) -> np.ndarray:
    r"""CDF of :math:`\mathcal N(1/2, \text{spread}^2)` clipped to [0, 1] (atoms at both ends)."""
    return np.where(values < 0, 0.0, np.where(values >= 1, 1.0, stats.norm.cdf(values, 0.5, spread)))


def distribution_fits(values: torch.Tensor, bits: int, block_size: int) -> dict[str, Fit]:
    r"""Fits of block-normalized values :math:`v = u / B \in [0, 1]`:

    - ``uniform``: :math:`U(0, 1)`, what uniform levels assume;
    - ``normal``: :math:`\mathcal N(\bar v, s^2)` with the sample's mean and deviation;
    - ``clipped_normal``: the levels' model, :math:`\mathcal N(1/2, (\sigma_G / B)^2)`
      clipped to [0, 1] with :math:`\sigma_G` from the block size alone
      (:func:`~iexact.quant.levels.clipped_normal_sigma`, nothing fitted).

    Wasserstein distances are against each distribution's quantiles at
    :math:`(i + 1/2) / n`, so the result is deterministic.

    Shapes:
        - **input:** ``values`` :math:`(n,)`, ``block_size`` :math:`\ge 3`
    """
    sample = np.sort(values.detach().double().cpu().numpy())
    n = sample.size
    quantiles = (np.arange(n) + 0.5) / n
    spread = clipped_normal_sigma(bits, block_size) / (2**bits - 1)
    mean, deviation = float(sample.mean()), float(max(sample.std(), 1e-12))
    models = {
        "uniform": (lambda v: np.clip(v, 0.0, 1.0), quantiles),
        "normal": (lambda v: stats.norm.cdf(v, mean, deviation), stats.norm.ppf(quantiles, mean, deviation)),
        "clipped_normal": (
            lambda v: _clipped_normal_cdf(v, spread),
            np.clip(stats.norm.ppf(quantiles, 0.5, spread), 0.0, 1.0),
        ),
    }
    fits = {}
    for name, (cdf, model_quantiles) in models.items():
        ks = stats.kstest(sample, cdf).statistic
        fits[name] = Fit(float(ks), float(np.mean(np.abs(sample - model_quantiles))))
    return fits


def rounding_variance(u: torch.Tensor, levels: tuple[float, ...]) -> float:
    r"""Mean rounding variance :math:`(u - \ell_j)(\ell_{j+1} - u)` of values
    :math:`u \in [0, B]` onto ``levels``, in units of :math:`(\text{step}/B)^2`:
    the expectation over the rounding noise, exact given the data."""
    table = torch.tensor(levels, dtype=torch.float64, device=u.device)
    values = u.double().clamp(0, levels[-1])
    index = torch.bucketize(values, table[1:-1], right=True)
    return ((values - table[index]) * (table[index + 1] - values)).mean().item()


@dataclasses.dataclass(frozen=True)
class ActivationAnalysis:
    r"""One tensor a training forward compressed, on its blocks' normalized axis.

    Attributes:
        layer (str): the innermost module that compressed it (``""``: the model itself).
        kind (str): that module's class (its class before conversion).
        shape (tuple): the tensor's shape; ``bits`` and ``block_size`` as compressed.
        fits (dict): :class:`Fit` per name in :data:`DISTRIBUTIONS`.
        variance (dict): per level kind (``"uniform"``, ``"optimal"``), ``{"model":
            the clipped-normal prediction, "data": on these values}``, units of
            :math:`(\text{step}/B)^2`; ``"calibrated"``: ``{"data", "levels"}``
            of levels fitted to this tensor.
        sample (torch.Tensor): up to ``sample_size`` normalized values
            :math:`v = u/B` (for histograms), evenly strided.
    """

    layer: str
    kind: str
    shape: tuple
    bits: int
    block_size: int
    fits: dict
    variance: dict
    sample: torch.Tensor


class _CompressCalls(TorchDispatchMode):
    """Hands ``iexact::compress``'s input, seed, config and result to ``record(owners,
    x, seed, config, stored)``, ``owners`` being the stack of modules running
    (innermost last) and ``stored`` the :class:`~iexact.ops.Stored` the op made."""

    def __init__(self, owners: list, record):
        super().__init__()
        self.owners, self.record = owners, record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.iexact.compress.default:
            x, position, *fields = args
            stored = ops.Stored(tuple(out), tuple(x.shape), x.dtype, tuple(fields))
            self.record(tuple(self.owners), x.detach(), seed_at(position), ops.config_of(tuple(fields)), stored)
        return out


def observe_compressions(model: torch.nn.Module, inputs, kwargs, record) -> None:
    """One training forward of ``model`` (torch's generator, the seed streams and
    the buffers end where they were), each compressed tensor
    handed to ``record`` (:class:`_CompressCalls`) as it is compressed."""
    owners, handles = [], []

    def enter(module, args) -> None:
        owners.append(module)

    def leave(module, args, output) -> None:
        owners.pop()

    for module in model.modules():
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    devices = cuda_devices(inputs, kwargs)
    streams = [(stream, stream.get_state()) for stream in seed_streams(model)]
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]  # BatchNorm's running statistics
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad(), _CompressCalls(owners, record):
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        for stream, state in streams:
            stream.set_state(state)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        model.train(was_training)


def _kind(module: torch.nn.Module) -> str:
    return getattr(module, "iexact_base", type(module)).__name__


def analyze_activations(
    model: torch.nn.Module, *inputs, sample_size: int = 20_000, **kwargs
) -> list[ActivationAnalysis]:
    r"""Every tensor one training forward of the compressed ``model`` compresses,
    analyzed (:class:`ActivationAnalysis`), in the order compressed. ``model``,
    its seed streams and torch's generator are left as they were.

    Besides the uniform and optimal levels, ``variance`` holds ``"calibrated"``:
    the variance on the data of levels fitted to that tensor alone
    (:func:`~iexact.quant.levels.fit_levels`), what :func:`calibrate_` can gain.

    Args:
        model (torch.nn.Module): a model converted by :func:`iexact.compress_`.
        *inputs, **kwargs: what to call it with.
        sample_size (int, optional): normalized values kept per tensor. (default: :obj:`20000`)
    """
    names = {module: name for name, module in model.named_modules()}
    analyses = []

    def record(owners, x, seed, config, stored) -> None:
        layer = owners[-1] if owners else model
        u = normalized_values(x, config, seed)
        top = 2**config.bits - 1
        block_size = stored_sizes(x.shape, config)[1]
        variance = {}
        for kind in ("uniform", "optimal"):
            levels = levels_for(kind, config.bits, block_size)
            variance[kind] = {
                "model": expected_variance(levels, config.bits, block_size),
                "data": rounding_variance(u, levels),
            }
        fitted = fit_levels(
            _subsample(u, CALIBRATION_SAMPLE).cpu().numpy(), config.bits, levels_for("optimal", config.bits, block_size)
        )
        variance["calibrated"] = {"model": None, "data": rounding_variance(u, fitted), "levels": list(fitted)}
        values = _subsample(u, sample_size) / top
        analyses.append(
            ActivationAnalysis(
                names.get(layer, ""),
                _kind(layer),
                tuple(x.shape),
                config.bits,
                block_size,
                distribution_fits(u / top, config.bits, block_size),
                variance,
                values,
            )
        )

    observe_compressions(model, inputs, kwargs, record)
    return analyses


CALIBRATION_SAMPLE = 2**20  # normalized values kept per tensor to fit levels to


def _subsample(u: torch.Tensor, size: int) -> torch.Tensor:
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
    names = {module: name for name, module in model.named_modules()}
    observed: dict[torch.nn.Module, list] = {}

    def record(owners, x, seed, config, stored) -> None:
        owner = next((m for m in reversed(owners) if is_compressed(m)), None)
        if owner is None or owner.iexact_config.levels != "calibrated":
            return
        u = normalized_values(x, config, seed)
        block_size = stored_sizes(x.shape, config)[1]
        observed.setdefault(owner, []).append((_subsample(u, CALIBRATION_SAMPLE).cpu().numpy(), block_size))

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
        name: list(module.iexact_config.levels)
        for name, module in model.named_modules()
        if is_compressed(module) and isinstance(module.iexact_config.levels, tuple)
    }


def load_calibration_state_(model: torch.nn.Module, state: dict) -> torch.nn.Module:
    """Give the named modules the levels :func:`calibration_state` saved.

    Raises:
        ValueError: a name that is no compressed module of ``model``, or invalid levels.
    """
    modules = dict(model.named_modules())
    for name, levels in state.items():
        module = modules.get(name)
        if module is None or not is_compressed(module):
            raise ValueError(f"calibrated levels for {name!r}, which is no compressed module of this model")
        module.iexact_config = dataclasses.replace(module.iexact_config, levels=tuple(levels))
    return model
