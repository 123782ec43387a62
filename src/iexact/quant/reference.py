r"""Reference block-wise stochastic quantization in plain PyTorch.

A flat float32 tensor :math:`z` of :math:`n` elements is cut into blocks of
:math:`G` consecutive elements (the last one may be shorter). Block
:math:`i` keeps :math:`m_i` and :math:`s_i \ge M_i - m_i` in the scale dtype,
rounded outward (:math:`m_i` down, :math:`s_i` up) so that every element maps
into :math:`[0, B]` on the axis

.. math::
    u = (z - m_i) \, B / s_i, \qquad B = 2^b - 1.

With levels :math:`\ell_0 = 0 < \dots < \ell_B = B`, an element with
:math:`u \in [\ell_j, \ell_{j+1}]` gets code :math:`j + 1` with probability
:math:`(u - \ell_j) / (\ell_{j+1} - \ell_j)`, else :math:`j`, so
:math:`\mathbb{E}[\ell_{\text{code}}] = u`, with variance
:math:`(u - \ell_j)(\ell_{j+1} - u)`. Codes are packed :math:`8/b` per byte,
first code in the lowest bits. Decoding is
:math:`\hat z = m_i + \ell_{\text{code}} \, s_i / B`.

Everything here works on any device; :mod:`iexact.kernels` swaps in fused
Triton kernels with the same signatures on CUDA.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from .rounding import codes_per_byte, level_table, rounding_map

if sys.byteorder != "little":  # packing reinterprets code bytes as wider integers
    raise ImportError("iexact's bit packing needs a little-endian machine")

_WORD_DTYPE = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # codes per byte -> word
NOISE_BITS = 16  # random bits per element for stochastic rounding


def _segments(flat: torch.Tensor, block_size: int):
    """``(first_block, view)``: the full blocks as an ``(n // G, G)`` view, then
    the shorter tail block, if any, as ``(1, n % G)``."""
    full_blocks = flat.numel() // block_size
    full = full_blocks * block_size
    yield 0, flat[:full].view(full_blocks, block_size)
    if full < flat.numel():
        yield full_blocks, flat[full:].view(1, -1)


def block_min_max(z: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block min and max of the flat tensor ``z``.

    Shapes:
        - **input:** :math:`(n,)`
        - **output:** two :math:`(\\lceil n / G \\rceil,)` tensors of ``z.dtype``
    """
    # amin + amax: two vectorized passes, several times faster on CPU than aminmax
    mins, maxs = zip(*((seg.amin(dim=1), seg.amax(dim=1)) for _, seg in _segments(z, block_size)), strict=True)
    if len(mins) == 1:
        return mins[0], maxs[0]
    return torch.cat(mins), torch.cat(maxs)


def _bucketized_position(u: torch.Tensor, levels: tuple[float, ...]) -> torch.Tensor:
    r""":math:`j + (u - \ell_j) s_j` by binary search (many levels)."""
    table, slopes = level_table(tuple(levels), u.device)
    index = torch.bucketize(u, table[1:-1], right=True)
    return (u - table[index]).mul_(slopes[index]).add_(index)


def draw_rounding_noise(numel: int, generator: torch.Generator | None, device) -> torch.Tensor:
    r"""``numel`` uniform 16-bit integers (int16 view of 64-bit draws).

    They stand for the offsets :math:`(r + 2^{15} + 1/2) / 2^{16} \in (0, 1)`,
    so the rounding probability of every element is exact up to
    :math:`2^{-17}` of its level gap.
    """
    words = math.ceil(numel * NOISE_BITS / 64)
    raw = torch.empty(words, dtype=torch.int64, device=device)
    raw.random_(-(2**63), None, generator=generator)
    return raw.view(torch.int16)[:numel]


def quantize_pack(
    z: torch.Tensor,
    mins: torch.Tensor,
    steps: torch.Tensor,
    block_size: int,
    bits: int,
    levels: tuple[float, ...],
    *,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Stochastically round the flat tensor ``z`` onto ``levels`` per block and
    pack the codes.

    Args:
        z (torch.Tensor): flat float32 values, :math:`(n,)`; overwritten.
        mins, steps (torch.Tensor): stored per-block min and step,
            :math:`(\lceil n/G \rceil,)` (see :func:`iexact.quant.rounding.stored_scales`).
        block_size (int): :math:`G`.
        bits (int): :math:`b \in \{1, 2, 4, 8\}`.
        levels (tuple of float): the :math:`2^b` levels.
        generator (torch.Generator, optional): source of the rounding noise.
        noise (torch.Tensor, optional): explicit uniform offsets in
            :math:`[0, 1)`, :math:`(n,)` float32, instead of drawn noise (to
            compare implementations with the noise fixed).

    Returns:
        uint8 tensor of :math:`\lceil n b / 8 \rceil` bytes.
    """
    numel = z.numel()
    top = 2**bits - 1
    per_byte = codes_per_byte(bits)
    codes = torch.empty(math.ceil(numel / per_byte) * per_byte, dtype=torch.uint8, device=z.device)
    codes[numel:].zero_()
    if noise is None:
        offsets = draw_rounding_noise(numel, generator, z.device)
        offset_scale, shift = 2.0**-NOISE_BITS, 0.5 + 2.0 ** -(NOISE_BITS + 1)
    else:
        offsets, offset_scale, shift = noise, 1.0, 0.0
    rounding = rounding_map(mins, steps, bits, levels, shift)
    for first, segment in _segments(z, block_size):
        rows, width = segment.shape
        start, end = first * block_size, first * block_size + rows * width
        # v = s0 u + shift, one multiply-add per element
        v = segment.mul_(rounding.gain[first : first + rows, None])
        v.add_(rounding.bias[first : first + rows, None])
        for threshold, span, slope_change in rounding.hinges:
            v.add_((v - threshold).clamp_(0.0, span), alpha=slope_change)
        if rounding.search:
            v = _bucketized_position(v, levels).add_(shift)
        v.add_(offsets[start:end].view(rows, width), alpha=offset_scale)
        if bits == 8:  # float32 spacing at 255 is 2**-16: B + offset may round up to 256
            v.clamp_(max=float(top))
        codes[start:end].view(rows, width).copy_(v)  # truncation = floor, as v >= 0
    return pack_codes(codes, bits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    r"""Pack ``codes`` (uint8, each :math:`< 2^b`, length a multiple of
    :math:`8/b`) into bytes, first code in the lowest bits.

    The bytes holding one output byte's codes are read as one little-endian
    word and folded with shift-or steps: :math:`\log_2(8/b)` passes.
    """
    per_byte = codes_per_byte(bits)
    if per_byte == 1:
        return codes
    word = codes.view(_WORD_DTYPE[per_byte])
    for step in range(per_byte.bit_length() - 1):  # log2(8/b) folds
        word = word | (word >> ((8 - bits) << step))
    return word.to(torch.uint8)


def _byte_table(levels: tuple[float, ...], bits: int, device) -> torch.Tensor:
    """``table[byte, i]`` = level of the ``i``-th code in ``byte``: ``(256, 8/b)``."""
    byte = torch.arange(256, device=device).unsqueeze(1)
    shifts = torch.arange(codes_per_byte(bits), device=device) * bits
    values, _ = level_table(tuple(levels), torch.device(device))
    return values[(byte >> shifts) & (2**bits - 1)]


def unpack_levels(packed: torch.Tensor, bits: int, levels: tuple[float, ...]) -> torch.Tensor:
    r""":math:`\ell_{\text{code}}` of every code in ``packed``: one gather from
    a 256-row table per byte.

    Returns:
        float32 :math:`(8/b \cdot \text{bytes},)`; codes past the stored
        elements are padding.
    """
    return F.embedding(packed.to(torch.int32), _byte_table(levels, bits, packed.device)).view(-1)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The first ``numel`` codes of ``packed`` as uint8 (inverse of :func:`pack_codes`)."""
    indices = tuple(float(i) for i in range(2**bits))
    return unpack_levels(packed, bits, indices)[:numel].to(torch.uint8)


def unpack_dequantize(
    packed: torch.Tensor,
    mins: torch.Tensor,
    steps: torch.Tensor,
    block_size: int,
    bits: int,
    levels: tuple[float, ...],
    numel: int,
) -> torch.Tensor:
    r""":math:`\hat z = m_i + \ell_{\text{code}} \, s_i / B` for the first
    ``numel`` elements.

    Returns:
        float32 :math:`(n,)`.
    """
    values = unpack_levels(packed, bits, levels)[:numel]
    scale = steps.float() / (2**bits - 1)
    offset = mins.float()
    for first, segment in _segments(values, block_size):
        rows = segment.shape[0]
        segment.mul_(scale[first : first + rows].unsqueeze(1))
        segment.add_(offset[first : first + rows].unsqueeze(1))
    return values
