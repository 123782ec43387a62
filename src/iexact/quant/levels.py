r"""Quantization levels on the normalized axis :math:`u \in [0, B]`.

Stochastic rounding of :math:`u \in [\ell_j, \ell_{j+1}]` to the levels
:math:`\ell_j, \ell_{j+1}` is unbiased with variance
:math:`(u - \ell_j)(\ell_{j+1} - u)`. Uniform levels are :math:`\ell_i = i`.
The optimal levels minimize the expected variance

.. math::
    V(\ell) = \sum_j \int_{\ell_j}^{\ell_{j+1}} (u - \ell_j)(\ell_{j+1} - u)
    \, \varphi_{B/2, \sigma_G}(u) \, du

under the clipped-normal model :math:`u \sim \mathcal{N}(B/2, \sigma_G^2)`
clipped to :math:`[0, B]` (the clipped mass sits on the levels 0 and
:math:`B` and costs nothing), with :math:`\sigma_G` chosen so that a block's
expected minimum is 0: :math:`P(u < 0) = 1/G`, i.e.
:math:`\sigma_G = (B/2) / \Phi^{-1}(1 - 1/G)`.

The solver is Newton's method on the interior levels: the gradient and the
tridiagonal Hessian of :math:`V` have closed forms in :math:`\Phi` and
:math:`\varphi`, so every ``(bits, G)`` is solved in about a millisecond and
cached; no fitted curve is used.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.linalg import solve_banded
from scipy.special import ndtr, ndtri

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def uniform_levels(bits: int) -> tuple[float, ...]:
    """Levels :math:`0, 1, \\dots, 2^b - 1`."""
    return tuple(float(i) for i in range(2**bits))


def clipped_normal_sigma(bits: int, block_size: int) -> float:
    r""":math:`\sigma_G = (B/2) / \Phi^{-1}(1 - 1/G)`: the model's spread of
    :math:`u` in a block of ``block_size`` elements (``block_size >= 3``)."""
    if block_size < 3:
        raise ValueError(f"block_size={block_size} has no spread model: need block_size >= 3")
    return (2**bits - 1) / 2.0 / float(ndtri(1.0 - 1.0 / block_size))


def _interval_moments(a, b, mean, sigma):
    r""":math:`\int_a^b x^p \varphi_{\mu,\sigma}(x)\,dx` for :math:`p = 0, 1, 2`."""
    za, zb = (a - mean) / sigma, (b - mean) / sigma
    pdf_a = np.exp(-0.5 * za * za) / _SQRT_2PI
    pdf_b = np.exp(-0.5 * zb * zb) / _SQRT_2PI
    m0 = ndtr(zb) - ndtr(za)
    dpdf = pdf_b - pdf_a
    m1 = mean * m0 - sigma * dpdf
    m2 = (mean**2 + sigma**2) * m0 - 2.0 * mean * sigma * dpdf - sigma**2 * (zb * pdf_b - za * pdf_a)
    return m0, m1, m2


def expected_variance(levels, bits: int, block_size: int) -> float:
    r"""The model's expected rounding variance :math:`V(\ell)` per element, in
    units of :math:`(\text{step}/B)^2`."""
    lv = np.asarray(levels, dtype=np.float64)
    a, b = lv[:-1], lv[1:]
    m0, m1, m2 = _interval_moments(a, b, (2**bits - 1) / 2.0, clipped_normal_sigma(bits, block_size))
    return float(np.sum(-m2 + (a + b) * m1 - a * b * m0))


def _gradient_and_hessian(levels, mean, sigma):
    """Gradient and banded Hessian of :math:`V` w.r.t. the interior levels."""
    lo, hi = levels[:-1], levels[1:]
    m0, m1, _ = _interval_moments(lo, hi, mean, sigma)
    # d V / d l_j = int_{l_{j-1}}^{l_j} (x - l_{j-1}) p  -  int_{l_j}^{l_{j+1}} (l_{j+1} - x) p
    left = m1[:-1] - lo[:-1] * m0[:-1]
    right = hi[1:] * m0[1:] - m1[1:]
    grad = left - right
    inner = levels[1:-1]
    density = np.exp(-0.5 * ((inner - mean) / sigma) ** 2) / (sigma * _SQRT_2PI)
    diag = (levels[2:] - levels[:-2]) * density
    off = -m0[1:-1]  # d^2 V / d l_j d l_{j+1} = -int_{l_j}^{l_{j+1}} p
    banded = np.zeros((3, inner.size))
    banded[0, 1:] = off
    banded[1] = diag
    banded[2, :-1] = off
    return grad, banded


def _companded_start(top: int, mean: float, sigma: float) -> np.ndarray:
    r"""High-resolution optimum as the start: level density :math:`\propto
    p^{1/3}`, i.e. equal steps in the CDF of :math:`\mathcal{N}(\mu, 3\sigma^2)`
    restricted to :math:`[0, B]`."""
    wide = sigma * np.sqrt(3.0)
    lo, hi = ndtr((0.0 - mean) / wide), ndtr((top - mean) / wide)
    levels = mean + wide * ndtri(lo + (hi - lo) * np.arange(top + 1) / top)
    levels[0], levels[-1] = 0.0, float(top)
    return levels


@functools.cache
def optimal_levels(bits: int, block_size: int) -> tuple[float, ...]:
    r"""Variance-optimal levels for ``bits`` bits and blocks of ``block_size``
    elements under the clipped-normal model (module docstring).

    Blocks of one or two elements hold only their min and max, which every
    level set reproduces exactly, so they get uniform levels, as does
    ``bits == 1`` (no interior level).

    Returns:
        tuple of :math:`2^b` floats, increasing from 0 to :math:`B`,
        symmetric about :math:`B/2`.
    """
    top = 2**bits - 1
    if bits == 1 or block_size < 3:
        return uniform_levels(bits)
    mean, sigma = top / 2.0, clipped_normal_sigma(bits, block_size)
    levels = _companded_start(top, mean, sigma)
    value = expected_variance(levels, bits, block_size)
    for _ in range(100):
        grad, banded = _gradient_and_hessian(levels, mean, sigma)
        try:
            step = -solve_banded((1, 1), banded, grad)
        except (np.linalg.LinAlgError, ValueError):
            step = -grad
        if not np.all(np.isfinite(step)) or step @ grad >= 0:
            step = -grad  # not a descent direction: fall back to steepest descent
        if np.max(np.abs(step)) < 1e-11:
            break  # converged: the Newton step is below float64 resolution of V
        scale = 1.0
        while scale > 1e-12:
            trial = levels.copy()
            trial[1:-1] += scale * step
            if np.all(np.diff(trial) > 0):
                trial_value = expected_variance(trial, bits, block_size)
                if trial_value <= value:
                    break
            scale *= 0.5
        else:
            break  # no decrease left at float64 resolution
        converged = value - trial_value <= 1e-14 * value
        levels, value = trial, trial_value
        if converged:
            break
    levels = 0.5 * (levels + (top - levels[::-1]))  # exact symmetry about B/2
    levels[0], levels[-1] = 0.0, float(top)
    return tuple(float(v) for v in levels)


def levels_for(kind, bits: int, block_size: int) -> tuple[float, ...]:
    """The levels of ``kind``: ``"uniform"``, ``"optimal"``, ``"calibrated"``
    (optimal until a module's levels are fitted) or explicit levels (returned as they are)."""
    if isinstance(kind, tuple):
        return kind
    if kind == "uniform":
        return uniform_levels(bits)
    if kind in ("optimal", "calibrated"):
        return optimal_levels(bits, block_size)
    raise ValueError(f"levels={kind!r} is invalid: expected 'uniform', 'optimal', 'calibrated' or a tuple")


def empirical_variance(sorted_u: np.ndarray, levels) -> float:
    r"""Mean rounding variance :math:`(u - \ell_j)(\ell_{j+1} - u)` of the values ``sorted_u`` (ascending)."""
    lv = np.asarray(levels, dtype=np.float64)
    index = np.clip(np.searchsorted(lv, sorted_u, side="right") - 1, 0, len(lv) - 2)
    return float(np.mean((sorted_u - lv[index]) * (lv[index + 1] - sorted_u)))


def fit_levels(u: np.ndarray, bits: int, start, rounds: int = 50) -> tuple[float, ...]:
    r"""Levels fitted to observed values :math:`u \in [0, B]`: the interior levels
    that minimize their empirical rounding variance, by exact coordinate descent
    from ``start`` (asymmetric levels allowed).

    With its neighbours :math:`a < c` fixed, level :math:`\ell` costs
    :math:`g(\ell) = \sum_{a \le u < \ell} (u - a)(\ell - u) + \sum_{\ell \le u \le c} (u - \ell)(c - u)`,
    linear in :math:`\ell` between two observed values and convex, with slope
    :math:`\sum_{a \le u < \ell} (u - a) - \sum_{\ell \le u \le c} (c - u)`; its minimum
    is the observed value where that slope turns positive (prefix sums over the
    sorted values). No step raises the variance, so the result is never worse
    than ``start`` on ``u``.

    Returns:
        tuple of :math:`2^b` floats, increasing from 0 to :math:`B`.
    """
    top = 2**bits - 1
    values = np.sort(np.clip(np.asarray(u, dtype=np.float64).ravel(), 0.0, top))
    levels = np.asarray(start, dtype=np.float64).copy()
    if bits == 1 or values.size == 0:
        return tuple(float(v) for v in levels)
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    for _ in range(rounds):
        moved = 0.0
        for j in range(1, top):
            a, c = levels[j - 1], levels[j + 1]
            lo, hi = np.searchsorted(values, a, side="left"), np.searchsorted(values, c, side="right")
            if hi - lo < 2:
                continue
            k = np.arange(lo, hi + 1)  # the split: values[lo:k] below the level, values[k:hi] above
            below = (prefix[k] - prefix[lo]) - a * (k - lo)
            above = c * (hi - k) - (prefix[hi] - prefix[k])
            turn = int(np.argmax(below - above >= 0))
            candidate = values[min(lo + turn, hi - 1)]
            gap = 1e-6 * top
            candidate = float(np.clip(candidate, a + gap, c - gap))
            trial = levels.copy()
            trial[j] = candidate
            if empirical_variance(values, trial) <= empirical_variance(values, levels):
                moved = max(moved, abs(candidate - levels[j]))
                levels = trial
        if moved < 1e-9 * top:
            break
    levels[0], levels[-1] = 0.0, float(top)
    return tuple(float(v) for v in levels)
