import math

import pytest
import torch

from iexact.quant import reference, rounding
from iexact.quant.levels import optimal_levels, uniform_levels


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("numel", [1, 7, 8, 1000, 1029])
def test_packing_round_trips_codes_exactly(bits, numel, device):
    per_byte = 8 // bits
    codes = torch.randint(0, 2**bits, (math.ceil(numel / per_byte) * per_byte,), dtype=torch.uint8, device=device)
    codes[numel:] = 0
    packed = reference.pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == rounding.packed_size(numel, bits) == math.ceil(numel * bits / 8)
    assert torch.equal(reference.unpack_codes(packed, bits, numel), codes[:numel])


def test_packing_order_is_little_end_first():
    codes = torch.tensor([1, 2, 3, 0, 3, 3, 0, 1], dtype=torch.uint8)
    packed = reference.pack_codes(codes, 2)
    assert packed.tolist() == [1 | 2 << 2 | 3 << 4, 3 | 3 << 2 | 0 << 4 | 1 << 6]
    bits1 = reference.pack_codes(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1], dtype=torch.uint8), 1)
    assert bits1.tolist() == [0b10000001]


@pytest.mark.parametrize("scale_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_stored_scales_round_outward(scale_dtype):
    torch.manual_seed(0)
    mins = torch.randn(1000) * 10
    maxs = mins + torch.rand(1000) * 3
    low, step = rounding.stored_scales(mins, maxs, scale_dtype)
    assert low.dtype == step.dtype == scale_dtype
    assert torch.all(low.float() <= mins)
    assert torch.all(low.float() + step.float() >= maxs)
    # the tightest such values: one representable step less would break a bound
    below = torch.nextafter(step, torch.zeros_like(step))
    assert torch.all((maxs - low.float() > below.float()) | (step == 0))


def _rounding_law(z, mins, steps, block_size, bits, levels):
    r"""Per element: the gap :math:`(\ell_{j+1} - \ell_j) s / B` between the two
    values it can decode to and the probability :math:`p` of the upper one.
    The formula's variance is :math:`(u - \ell_j)(\ell_{j+1} - u)(s/B)^2 =
    \text{gap}^2 p (1 - p)`."""
    top = 2**bits - 1
    block = torch.arange(z.numel()) // block_size
    step = steps.double()[block]
    u = torch.where(step > 0, (z.double() - mins.double()[block]) * top / step, torch.zeros_like(step))
    table = torch.tensor(levels, dtype=torch.float64)
    j = torch.bucketize(u, table[1:-1], right=True)
    u = u.clamp(0, top)
    formula = (u - table[j]) * (table[j + 1] - u) * (step / top) ** 2
    gap = (table[j + 1] - table[j]) * step / top
    return formula, gap, (u - table[j]) / (table[j + 1] - table[j])


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("kind", ["uniform", "optimal"])
def test_empirical_variance_matches_formula(bits, kind):
    torch.manual_seed(1)
    block_size, draws = 50, 4000
    z = torch.randn(300)
    levels = uniform_levels(bits) if kind == "uniform" else optimal_levels(bits, block_size)
    mins, maxs = reference.block_min_max(z, block_size)
    low, step = rounding.stored_scales(mins, maxs, torch.bfloat16)
    # all draws in one call: the tensor repeated, each copy with the same blocks
    repeated, low_r, step_r = z.repeat(draws), low.repeat(draws), step.repeat(draws)
    generator = torch.Generator().manual_seed(2)
    codes = reference.quantize_pack(repeated.clone(), low_r, step_r, block_size, bits, levels, generator=generator)
    samples = reference.unpack_dequantize(codes, low_r, step_r, block_size, bits, levels, repeated.numel())
    empirical = samples.view(draws, -1).double().var(dim=0)
    formula, gap, p = _rounding_law(z, low, step, block_size, bits, levels)
    assert torch.all(empirical[formula == 0] == 0)
    assert empirical.sum() / formula.sum() == pytest.approx(1.0, abs=0.03)
    # per element, within 5 standard errors of a sample variance of gap * Bernoulli(p)
    pq = p * (1 - p)  # Var(sample variance) = (mu4 - sigma^4) / K + 2 sigma^4 / (K (K - 1))
    standard_error = gap**2 * ((pq * (1 - 4 * pq)).clamp(min=0) / draws + 2 * pq**2 / (draws * (draws - 1))).sqrt()
    assert torch.all((empirical - formula).abs() <= 5 * standard_error + 1e-12 * gap**2)


@pytest.mark.parametrize("block_size", [64, 256, 1024])
def test_optimal_levels_beat_uniform_on_gaussian_data(block_size):
    torch.manual_seed(3)
    z = torch.randn(64 * 1024)
    mins, maxs = reference.block_min_max(z, block_size)
    low, step = rounding.stored_scales(mins, maxs, torch.bfloat16)
    errors = {}
    for kind, levels in (("uniform", uniform_levels(2)), ("optimal", optimal_levels(2, block_size))):
        generator = torch.Generator().manual_seed(4)
        codes = reference.quantize_pack(z.clone(), low, step, block_size, 2, levels, generator=generator)
        estimate = reference.unpack_dequantize(codes, low, step, block_size, 2, levels, z.numel())
        errors[kind] = ((estimate - z) ** 2).mean().item()
    assert errors["optimal"] < errors["uniform"]


def test_fixed_noise_floor_of_position():
    levels = optimal_levels(2, 1024)
    z = torch.tensor([0.0, 1.0, levels[1], 1.5, 2.5, 3.0])
    mins, steps = torch.zeros(1), torch.full((1,), 3.0)
    codes = reference.quantize_pack(z.clone(), mins, steps, 6, 2, levels, noise=torch.zeros(6))
    assert reference.unpack_codes(codes, 2, 6).tolist() == [0, 0, 1, 1, 2, 3]
    almost_one = torch.full((6,), 1 - 2**-20)
    codes = reference.quantize_pack(z.clone(), mins, steps, 6, 2, levels, noise=almost_one)
    assert reference.unpack_codes(codes, 2, 6).tolist() == [0, 1, 1, 2, 3, 3]
