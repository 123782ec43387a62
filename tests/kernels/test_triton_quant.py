"""The Triton kernels against the PyTorch reference (interpreted on CPU)."""

import pytest
import torch

from iexact.quant import levels_for, reference, rounding
from iexact.seeds import stream_seed

triton_quant = pytest.importorskip("iexact.kernels.triton_quant")


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _case(numel, block_size, bits, kind, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(numel, generator=generator).to(_device())
    levels = levels_for(kind, bits, block_size)
    mins, maxs = reference.block_min_max(z, block_size)
    low, step = rounding.stored_scales(mins, maxs, torch.bfloat16)
    noise = torch.rand(numel, generator=generator).to(_device())
    return z, low, step, levels, noise


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("kind", ["uniform", "optimal"])
@pytest.mark.parametrize("numel, block_size", [(1000, 64), (777, 100), (5, 16), (2048, 1024)])
def test_kernels_equal_reference_with_fixed_noise(bits, kind, numel, block_size):
    z, low, step, levels, noise = _case(numel, block_size, bits, kind)
    expected = reference.quantize_pack(z.clone(), low, step, block_size, bits, levels, noise=noise)
    kernel = triton_quant.quantize_pack(z.clone(), low, step, block_size, bits, levels, noise=noise)
    assert kernel.shape == expected.shape
    mismatched = (kernel != expected).sum().item()
    assert mismatched == 0 if not torch.cuda.is_available() else mismatched <= 2  # GPU may fuse multiply-adds
    reference_values = reference.unpack_dequantize(expected, low, step, block_size, bits, levels, numel)
    kernel_values = triton_quant.unpack_dequantize(expected, low, step, block_size, bits, levels, numel)
    torch.testing.assert_close(kernel_values, reference_values, rtol=1e-6, atol=1e-6)
    if not torch.cuda.is_available():
        assert torch.equal(kernel_values, reference_values)


@pytest.mark.parametrize("bits, kind", [(2, "optimal"), (4, "uniform")])
def test_kernel_noise_is_unbiased(bits, kind):
    block_size, draws = 50, 400
    z, low, step, levels, _ = _case(200, block_size, bits, kind, seed=1)
    samples = torch.stack(
        [
            triton_quant.unpack_dequantize(
                triton_quant.quantize_pack(
                    z.clone(), low, step, block_size, bits, levels, seed=stream_seed(draw, 0) & 0x7FFFFFFF
                ),
                low,
                step,
                block_size,
                bits,
                levels,
                z.numel(),
            ).double()
            for draw in range(draws)
        ]
    )
    standard_error = samples.std(0) / draws**0.5
    z_scores = (samples.mean(0) - z.double()) / standard_error.clamp(min=1e-12)
    moving = standard_error > 0
    assert z_scores[moving].abs().max() <= 5
    assert abs(z_scores[moving].sum().item()) <= 4 * moving.sum().item() ** 0.5


def test_offset_shifts_the_noise_stream():
    z, low, step, levels, _ = _case(512, 64, 2, "uniform")
    first = triton_quant.quantize_pack(z.clone(), low, step, 64, 2, levels, seed=7, offset=0)
    again = triton_quant.quantize_pack(z.clone(), low, step, 64, 2, levels, seed=7, offset=0)
    moved = triton_quant.quantize_pack(z.clone(), low, step, 64, 2, levels, seed=7, offset=512)
    assert torch.equal(first, again) and not torch.equal(first, moved)


@pytest.mark.parametrize("bits", [2, 4])
def test_asymmetric_levels_equal_reference_with_fixed_noise(bits):
    """Calibrated levels are asymmetric: both sides round them by binary search."""
    top = 2**bits - 1
    levels = tuple(top * (i / top) ** 1.4 for i in range(top + 1))
    z, low, step, _, noise = _case(1000, 64, bits, "uniform")
    expected = reference.quantize_pack(z.clone(), low, step, 64, bits, levels, noise=noise)
    kernel = triton_quant.quantize_pack(z.clone(), low, step, 64, bits, levels, noise=noise)
    assert (kernel != expected).sum().item() <= (0 if not torch.cuda.is_available() else 2)
