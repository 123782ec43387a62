r"""Dispatch of the quantize/pack and unpack/dequantize kernels.

On CUDA tensors, with Triton installed, the fused Triton kernels of
:mod:`iexact.kernels.triton_quant` run; everywhere else the PyTorch reference
of :mod:`iexact.quant.reference`. Both have the same signature and the same
result for the same rounding noise.
"""
from __future__ import annotations

import torch

from ..quant import reference
from ..seeds import stream_seed


def triton_available() -> bool:
    """Whether Triton can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _use_triton(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda and triton_available()


def quantize_pack(z, mins, steps, block_size, bits, levels, seed, offset):
    r"""Quantize the flat float32 ``z`` per block onto ``levels`` and pack the
    codes: :math:`\lceil n b / 8 \rceil` bytes. ``z`` may be overwritten.

    The rounding noise is a function of ``(seed, offset)``
    (:func:`iexact.seeds.stream_seed`), ``offset`` being the position of
    ``z[0]`` in the whole compressed tensor, so every chunk of one tensor
    draws its own noise, unrelated to the projection drawn from ``seed``.
    """
    noise_seed = stream_seed(seed, offset)
    if _use_triton(z):
        from . import triton_quant

        # Philox key of 31 bits; counters are the element indices of this chunk
        return triton_quant.quantize_pack(z, mins, steps, block_size, bits, levels, seed=noise_seed & 0x7FFFFFFF)
    generator = torch.Generator(device=z.device).manual_seed(noise_seed)
    return reference.quantize_pack(z, mins, steps, block_size, bits, levels, generator=generator)


def unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel):
    r""":math:`\hat z = m + \ell_{\text{code}} \, s / B` for the first ``numel`` elements."""
    if _use_triton(codes):
        from . import triton_quant

        return triton_quant.unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel)
    return reference.unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel)
