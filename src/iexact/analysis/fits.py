r"""What a compressed model rounds, against the distributions the levels assume.

:func:`analyze_activations` takes every tensor one training forward
compresses, on its blocks' normalized axis
(:func:`iexact.codec.normalized_values`), against the uniform, normal and
clipped-normal distributions (:func:`distribution_fits`), and its rounding
variance on the data against the clipped-normal model's prediction
(:func:`rounding_variance`, :func:`iexact.quant.expected_variance`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import stats

from ..codec import normalized_values, stored_sizes
from ..nn import original_class
from ..quant import clipped_normal_sigma, expected_variance, fit_levels, levels_for
from .calibration import CALIBRATION_SAMPLE, even_sample
from .observe import observe_compressions

DISTRIBUTIONS = ("uniform", "normal", "clipped_normal")


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
        *inputs: the positional arguments to call it with.
        **kwargs: the keyword arguments to call it with.
        sample_size (int, optional): normalized values kept per tensor. (default: :obj:`20000`)
    """
    names = {module: name for name, module in model.named_modules()}
    analyses = []

    def record(owners, x, seed, config, stored) -> None:
        layer = owners[-1] if owners else model
        u = normalized_values(x, config, seed)
        top = 2**config.bits - 1
        block_size = stored_sizes(x.shape, config)[1]
        variance: dict[str, dict] = {}
        for kind in ("uniform", "optimal"):
            levels = levels_for(kind, config.bits, block_size)
            variance[kind] = {
                "model": expected_variance(levels, config.bits, block_size),
                "data": rounding_variance(u, levels),
            }
        fitted = fit_levels(
            even_sample(u, CALIBRATION_SAMPLE).cpu().numpy(),
            config.bits,
            levels_for("optimal", config.bits, block_size),
        )
        variance["calibrated"] = {"model": None, "data": rounding_variance(u, fitted), "levels": list(fitted)}
        values = even_sample(u, sample_size) / top
        analyses.append(
            ActivationAnalysis(
                names.get(layer, ""),
                original_class(layer).__name__,
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
