r"""Dispatch of the quantize/pack and unpack/dequantize kernels.

On CUDA tensors, with Triton installed, the fused Triton kernels of
:mod:`iexact.kernels.triton_quant` run; everywhere else the PyTorch reference
of :mod:`iexact.quant.blockwise`. Both have the same signature and the same
result for the same rounding noise.
"""
from __future__ import annotations

import torch

from ..quant import blockwise

_MASK64 = 2**64 - 1


def triton_available() -> bool:
    """Whether Triton can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _splitmix64(value: int) -> int:
    """SplitMix64 finalizer: a bijective 64-bit mix with full avalanche."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def stream_seed(seed: int, offset: int) -> int:
    """Seed of the rounding noise for the chunk at ``offset`` of a tensor
    compressed with ``seed``: well mixed, so nearby seeds and offsets give
    unrelated streams (and differ from the projection's ``seed``)."""
    return _splitmix64(seed ^ _splitmix64(offset + 1)) >> 2


def _use_triton(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda and triton_available()


def quantize_pack(z, mins, steps, block_size, bits, levels, seed, offset):
    r"""Quantize the flat float32 ``z`` per block onto ``levels`` and pack the
    codes: :math:`\lceil n b / 8 \rceil` bytes. ``z`` may be overwritten.

    The rounding noise is a function of ``(seed, offset)``, ``offset`` being
    the position of ``z[0]`` in the whole compressed tensor, so every chunk of
    one tensor draws its own noise, unrelated to the projection drawn from
    ``seed``.
    """
    noise_seed = stream_seed(seed, offset)
    if _use_triton(z):
        from . import triton_quant

        # Philox key of 31 bits; counters are the element indices of this chunk
        return triton_quant.quantize_pack(z, mins, steps, block_size, bits, levels, seed=noise_seed & 0x7FFFFFFF)
    generator = torch.Generator(device=z.device).manual_seed(noise_seed)
    return blockwise.quantize_pack(z, mins, steps, block_size, bits, levels, generator=generator)


def unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel):
    r""":math:`\hat z = m + \ell_{\text{code}} \, s / B` for the first ``numel`` elements."""
    if _use_triton(codes):
        from . import triton_quant

        return triton_quant.unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel)
    return blockwise.unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel)
