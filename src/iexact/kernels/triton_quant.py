r"""Fused Triton kernels: quantize + pack, and unpack + dequantize.

Same signatures and results as :func:`iexact.quant.reference.quantize_pack`
and :func:`iexact.quant.reference.unpack_dequantize` for the same rounding
noise; drawn noise comes from Philox (``tl.rand``) keyed by the seed and the
element's position, so no noise tensor is ever materialized.

One program handles ``BYTES`` output bytes, i.e. a ``BYTES x (8/b)`` tile of
elements; each element finds its block by ``index // G`` and gathers that
block's affine map, so any block size, tail blocks included, needs no
special case.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..quant.rounding import RoundingPlan, level_table, packed_size, rounding_map, rounding_plan

_BYTES_PER_PROGRAM = 256
MAX_LAUNCH_ELEMENTS = 2**31 - 1  # element indices are int32 (iexact.codec splits larger tensors)


def _check_launch(numel: int) -> None:
    if numel > MAX_LAUNCH_ELEMENTS:
        raise ValueError(
            f"one kernel launch handles at most 2**31 - 1 elements, got {numel:,}: "
            f"iexact.codec splits larger tensors into chunks"
        )


_MODE_UNIFORM, _MODE_HINGE, _MODE_SEARCH = 0, 1, 2


@triton.jit
def _byte_slots(BITS: tl.constexpr, BYTES: tl.constexpr):
    """This program's ``BYTES`` bytes of packed codes, each code's slot in its
    byte, and the code's element index: ``(byte, slot, index)``."""
    PER_BYTE: tl.constexpr = 8 // BITS
    byte = tl.program_id(0) * BYTES + tl.arange(0, BYTES)
    slot = tl.arange(0, PER_BYTE)
    return byte, slot, byte[:, None] * PER_BYTE + slot[None, :]


@triton.jit
def level_position(v, levels_ptr, slopes_ptr, hinge_start, hinge_span, hinge_gain, shift, BITS, MODE):
    r"""The position of :math:`v = s_0 u + \text{shift}` between level indices
    (plus shift), :math:`j + (u - \ell_j) s_j + \text{shift}`: ``v`` itself
    for uniform levels (``MODE`` 0), one merged hinge (1), or a binary search
    over the levels for :math:`v = u` (2); see :func:`iexact.quant.rounding.rounding_map`."""
    TOP: tl.constexpr = (1 << BITS) - 1
    if MODE == 1:
        v = v + tl.minimum(tl.maximum(v - hinge_start, 0.0), hinge_span) * hinge_gain
    if MODE == 2:
        # binary search for j with l_j <= u < l_{j+1}, then j + (u - l_j) s_j
        lo = tl.zeros(v.shape, tl.int32)
        for level in tl.static_range(BITS):
            probe = lo + (1 << (BITS - 1 - level))
            lo = tl.where(v >= tl.load(levels_ptr + probe), probe, lo)
        lo = tl.minimum(lo, TOP - 1)
        v = (v - tl.load(levels_ptr + lo)) * tl.load(slopes_ptr + lo) + lo.to(tl.float32) + shift
    return v


def rounding_mode(levels: tuple[float, ...], shift: float) -> tuple[int, tuple[float, float, float], RoundingPlan]:
    """``(MODE, (start, span, gain), plan)`` of :func:`level_position` for ``levels``
    (``plan``: their :func:`~iexact.quant.rounding.rounding_plan`, which has at
    most one merged hinge: levels that would need more are searched)."""
    plan = rounding_plan(tuple(levels), shift)
    if plan.search:
        return _MODE_SEARCH, (0.0, 0.0, 0.0), plan
    if not plan.hinges:
        return _MODE_UNIFORM, (0.0, 0.0, 0.0), plan
    ((start, span, gain),) = plan.hinges
    return _MODE_HINGE, (float(start), float(span), float(gain)), plan


@triton.jit
def _quantize_pack_kernel(
    z_ptr,
    gain_ptr,
    bias_ptr,
    levels_ptr,
    slopes_ptr,
    noise_ptr,
    out_ptr,
    numel,
    block_size,
    seed,
    offset,
    hinge_start,
    hinge_span,
    hinge_gain,
    shift,
    BITS: tl.constexpr,
    MODE: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BYTES: tl.constexpr,
):
    TOP: tl.constexpr = (1 << BITS) - 1
    byte, slot, index = _byte_slots(BITS, BYTES)
    valid = index < numel
    z = tl.load(z_ptr + index, mask=valid, other=0.0)
    block = index // block_size
    gain = tl.load(gain_ptr + block, mask=valid, other=0.0)
    bias = tl.load(bias_ptr + block, mask=valid, other=0.0)
    v = z * gain
    v = v + bias
    v = level_position(v, levels_ptr, slopes_ptr, hinge_start, hinge_span, hinge_gain, shift, BITS, MODE)
    if HAS_NOISE:
        v = v + tl.load(noise_ptr + index, mask=valid, other=0.0)
    else:
        v = v + tl.rand(seed, index + offset)
    code = tl.minimum(v.to(tl.int32), TOP)  # v >= 0: truncation is floor
    code = tl.where(valid, code, 0)
    packed = tl.sum(code << (slot[None, :] * BITS), axis=1)
    tl.store(out_ptr + byte, packed.to(tl.uint8), mask=byte * (8 // BITS) < numel)


@triton.jit
def _unpack_dequantize_kernel(
    codes_ptr,
    low_ptr,
    scale_ptr,
    levels_ptr,
    out_ptr,
    numel,
    block_size,
    BITS: tl.constexpr,
    BYTES: tl.constexpr,
):
    TOP: tl.constexpr = (1 << BITS) - 1
    byte, slot, index = _byte_slots(BITS, BYTES)
    valid = index < numel
    packed = tl.load(codes_ptr + byte, mask=byte * (8 // BITS) < numel, other=0).to(tl.int32)
    code = (packed[:, None] >> (slot[None, :] * BITS)) & TOP
    level = tl.load(levels_ptr + code, mask=valid, other=0.0)
    block = index // block_size
    low = tl.load(low_ptr + block, mask=valid, other=0.0)
    scale = tl.load(scale_ptr + block, mask=valid, other=0.0)
    value = level * scale
    tl.store(out_ptr + index, value + low, mask=valid)


def quantize_pack(z, mins, steps, block_size, bits, levels, *, seed=0, offset=0, noise=None):
    r"""Triton twin of :func:`iexact.quant.reference.quantize_pack`.

    Args:
        seed, offset (int): Philox key and the position of ``z[0]`` in the
            whole tensor (used when ``noise`` is ``None``).
        noise (torch.Tensor, optional): explicit uniform offsets in :math:`[0, 1)`.

    Returns:
        uint8 tensor of :math:`\lceil n b / 8 \rceil` bytes.
    """
    numel = z.numel()
    _check_launch(numel)
    out = torch.empty(packed_size(numel, bits), dtype=torch.uint8, device=z.device)
    if numel == 0:
        return out
    rounding = rounding_map(mins, steps, bits, levels, 0.0)
    mode, hinge, _ = rounding_mode(levels, 0.0)
    table, slopes = level_table(tuple(levels), z.device)
    grid = (triton.cdiv(out.numel(), _BYTES_PER_PROGRAM),)
    _quantize_pack_kernel[grid](
        z,
        rounding.gain,
        rounding.bias,
        table,
        slopes,
        noise if noise is not None else z,
        out,
        numel,
        block_size,
        seed & 0x7FFFFFFF,
        offset,
        *hinge,
        0.0,
        BITS=bits,
        MODE=mode,
        HAS_NOISE=noise is not None,
        BYTES=_BYTES_PER_PROGRAM,
    )
    return out


def unpack_dequantize(codes, mins, steps, block_size, bits, levels, numel):
    r"""Triton twin of :func:`iexact.quant.reference.unpack_dequantize`.

    Returns:
        float32 :math:`(n,)`.
    """
    _check_launch(numel)
    out = torch.empty(numel, dtype=torch.float32, device=codes.device)
    if numel == 0:
        return out
    table, _ = level_table(tuple(levels), codes.device)
    scale = steps.float() / (2**bits - 1)
    grid = (triton.cdiv(codes.numel(), _BYTES_PER_PROGRAM),)
    _unpack_dequantize_kernel[grid](
        codes,
        mins.float(),
        scale,
        table,
        out,
        numel,
        block_size,
        BITS=bits,
        BYTES=_BYTES_PER_PROGRAM,
    )
    return out
