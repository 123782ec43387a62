from itertools import pairwise

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from iexact.quant.levels import (
    clipped_normal_sigma,
    expected_variance,
    levels_for,
    optimal_levels,
    uniform_levels,
)


@pytest.mark.parametrize("block_size, alpha", [(16, 1.05), (1024, 1.14)])
def test_int2_alpha_matches_design(block_size, alpha):
    levels = optimal_levels(2, block_size)
    assert levels[0] == 0.0 and levels[3] == 3.0
    assert abs(levels[1] - alpha) <= 0.01
    assert levels[2] == pytest.approx(3 - levels[1], abs=1e-12)


def test_sigma_puts_expected_minimum_at_zero():
    sigma = clipped_normal_sigma(2, 256)
    assert norm.cdf(0.0, loc=1.5, scale=sigma) == pytest.approx(1 / 256, rel=1e-9)


def _quadrature_variance(levels, bits, block_size):
    sigma, mean = clipped_normal_sigma(bits, block_size), (2**bits - 1) / 2

    def density(u, lo, hi):
        return (u - lo) * (hi - u) * norm.pdf(u, mean, sigma)

    return sum(quad(density, lo, hi, args=(lo, hi))[0] for lo, hi in pairwise(levels))


@pytest.mark.parametrize("bits, block_size", [(2, 64), (4, 256), (8, 1024)])
def test_closed_form_objective_matches_quadrature(bits, block_size):
    levels = optimal_levels(bits, block_size)
    assert expected_variance(levels, bits, block_size) == pytest.approx(
        _quadrature_variance(levels, bits, block_size), rel=1e-7
    )


@pytest.mark.parametrize("block_size", [16, 100, 1024, 4096])
def test_int2_is_the_one_dimensional_optimum(block_size):
    def variance(alpha):
        return expected_variance((0.0, alpha, 3 - alpha, 3.0), 2, block_size)

    best = minimize_scalar(variance, bounds=(0.5, 1.5), method="bounded", options={"xatol": 1e-10})
    assert optimal_levels(2, block_size)[1] == pytest.approx(best.x, abs=1e-6)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block_size", [16, 1024, 2**20])
def test_optimum_is_stationary_and_beats_perturbations(bits, block_size):
    levels = np.array(optimal_levels(bits, block_size))
    assert np.all(np.diff(levels) > 0)
    assert np.allclose(levels + levels[::-1], 2**bits - 1)
    best = expected_variance(levels, bits, block_size)
    assert best < expected_variance(uniform_levels(bits), bits, block_size)
    rng = np.random.default_rng(0)
    for _ in range(20):
        trial = levels.copy()
        trial[1:-1] += rng.normal(scale=1e-3, size=trial.size - 2)
        trial.sort()
        assert expected_variance(trial, bits, block_size) >= best


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("block_size", [17, 333, 5000])
def test_odd_block_sizes_are_solved(bits, block_size):
    """Newton converges for any G, not only powers of two: increasing, symmetric, better than uniform."""
    levels = np.array(optimal_levels(bits, block_size))
    assert np.all(np.diff(levels) > 0) and np.allclose(levels + levels[::-1], 2**bits - 1)
    assert expected_variance(levels, bits, block_size) < expected_variance(uniform_levels(bits), bits, block_size)


def test_degenerate_blocks_get_uniform_levels():
    assert optimal_levels(2, 1) == uniform_levels(2)
    assert optimal_levels(2, 2) == uniform_levels(2)
    assert optimal_levels(1, 1024) == (0.0, 1.0)


def test_levels_for_rejects_unknown_kind():
    assert levels_for("uniform", 4, 64) == uniform_levels(4)
    with pytest.raises(ValueError, match="'fancy'.*'uniform', 'optimal', 'calibrated' or a tuple"):
        levels_for("fancy", 2, 64)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("shape", ["normal", "skewed", "peaked", "uniform"])
def test_fitted_levels_never_raise_the_variance_on_their_data(bits, shape):
    from iexact.quant.levels import empirical_variance, fit_levels

    rng = np.random.default_rng(0)
    top = 2**bits - 1
    draw = {
        "normal": lambda n: rng.normal(top / 2, top / 6, n),
        "skewed": lambda n: rng.gamma(2.0, top / 8, n),
        "peaked": lambda n: top / 2 + rng.laplace(0, top / 12, n),
        "uniform": lambda n: rng.uniform(0, top, n),
    }
    u = np.clip(draw[shape](50_000), 0, top)
    start = optimal_levels(bits, 256)
    fitted = fit_levels(u, bits, start)
    assert len(fitted) == top + 1 and fitted[0] == 0 and fitted[-1] == top
    assert all(b > a for a, b in pairwise(fitted))
    ordered = np.sort(u)
    assert empirical_variance(ordered, fitted) <= empirical_variance(ordered, start) + 1e-12
    if shape == "skewed":  # far from the model: fitting gains a lot
        assert empirical_variance(ordered, fitted) < 0.9 * empirical_variance(ordered, start)
    if shape == "uniform":  # uniform data: the fit moves towards uniform levels
        assert empirical_variance(ordered, fitted) <= empirical_variance(ordered, uniform_levels(bits)) * 1.01
