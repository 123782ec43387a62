r"""Dispatch of the quantize/pack and unpack/dequantize kernels.

On CUDA tensors, with Triton installed, the Triton kernels run: the
one-launch compress and decompress of :mod:`iexact.kernels.triton_codec`
where they take the layout (:func:`fused`), else the quantize/pack and
unpack/dequantize kernels of :mod:`iexact.kernels.triton_quant` on projected
values. Everywhere else the PyTorch reference of :mod:`iexact.quant.reference`
runs. Each Triton path gives the PyTorch path's result for the same rounding
noise.

The environment variable ``IEXACT_KERNELS`` overrides the choice:
``triton`` sends every tensor to the Triton kernels (CPU tensors too, under
``TRITON_INTERPRET=1``: how the CUDA path is tested on machines without a
GPU), ``torch`` sends every tensor to the reference, ``auto`` (or unset) is
the rule above. :func:`uses_triton` is the one place that decides, and the
codec reads it too, so a forced run takes the CUDA path's chunking as well.
"""

from __future__ import annotations

import os

import torch

from ..quant import reference
from ..seeds import stream_seed

BACKENDS = ("auto", "triton", "torch")  # the values of IEXACT_KERNELS


def triton_available() -> bool:
    """Whether Triton can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def uses_triton(device: torch.device) -> bool:
    """Whether tensors on ``device`` go to the Triton kernels (see the module docstring).

    Raises:
        ValueError: ``IEXACT_KERNELS`` is not one of :data:`BACKENDS`.
        RuntimeError: ``IEXACT_KERNELS=triton`` without Triton installed, or
            for CPU tensors without ``TRITON_INTERPRET=1``.
    """
    choice = os.environ.get("IEXACT_KERNELS", "auto") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"IEXACT_KERNELS={choice!r} is invalid: use one of {', '.join(BACKENDS)}")
    if choice == "torch":
        return False
    if choice == "auto":
        return device.type == "cuda" and triton_available()
    if not triton_available():
        raise RuntimeError('IEXACT_KERNELS=triton but Triton is not installed: pip install "iexact[triton]"')
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"IEXACT_KERNELS=triton on {device.type} tensors needs TRITON_INTERPRET=1 "
            f"(set before Triton is imported): only the interpreter runs kernels off the GPU"
        )
    return True


def fused(device: torch.device, block_size: int, projection: str | None, dtype: torch.dtype, k: int | None) -> bool:
    """Whether tensors of ``dtype`` on ``device``, projected by ``projection``
    to ``k`` columns (``None``: unprojected) and stored in blocks of
    ``block_size``, go through the one-launch kernels of
    :mod:`iexact.kernels.triton_codec` (on the Triton path, for the layouts
    those kernels take); otherwise :func:`quantize_pack` and
    :func:`unpack_dequantize` run on the projected values."""
    if not uses_triton(device):
        return False
    from . import triton_codec

    return triton_codec.fusable(block_size, projection, dtype, k)


def quantize_pack(z, mins, steps, block_size, bits, levels, seed, offset):
    r"""Quantize the flat float32 ``z`` per block onto ``levels`` and pack the
    codes: :math:`\lceil n b / 8 \rceil` bytes. ``z`` may be overwritten.

    The rounding noise is a function of ``(seed, offset)``
    (:func:`iexact.seeds.stream_seed`), ``offset`` being the position of
    ``z[0]`` in the whole compressed tensor, so every chunk of one tensor
    draws its own noise, unrelated to the projection drawn from ``seed``.
    """
    noise_seed = stream_seed(seed, offset)
    if uses_triton(z.device):
        from . import triton_quant

        # Philox key of 31 bits; counters are the element indices of this chunk
        return triton_quant.quantize_pack(z, mins, steps, block_size, bits, levels, seed=noise_seed & 0x7FFFFFFF)
    generator = torch.Generator(device=z.device).manual_seed(noise_seed)
    return reference.quantize_pack(z, mins, steps, block_size, bits, levels, generator=generator)


def unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel):
    r""":math:`\hat z = m + \ell_{\text{code}} \, s / B` for the first ``numel`` elements."""
    if uses_triton(codes.device):
        from . import triton_quant

        return triton_quant.unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel)
    return reference.unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel)
