r"""Fused Triton kernels: a whole compress, a whole decompress, a whole weight-gradient product.

:func:`compress_rows` reads the rows :math:`H` once and writes the packed
codes and the block scales once: the centering (the column center
:math:`c` subtracted, :func:`iexact.codec.column_center`), the projection (none; the count sketch
with its per-row signs hashed in the kernel from the seed, column :math:`d`
in bucket :math:`d \bmod k`; or a dense kind's :math:`H P` by ``tl.dot``,
:math:`P` hashed in place), the per-block min and max (whole blocks per
program), the outward rounding of the scales into their dtype, the
stochastic rounding (16 noise bits per element, eight elements per Philox
call) and the packing. :func:`decompress_rows` reads the codes and scales
and writes :math:`\hat H` in its dtype: unpacking, dequantizing, the
inverse projection and the center added back per output tile. :func:`transpose_product_rows` computes
:math:`A^\top \hat H` with :math:`\hat H` decoded inside the product.

They compute what :func:`iexact.codec.compress` and :func:`iexact.codec.decompress`
compute on the PyTorch path, in the same order of float operations for the
sketch and no projection: with the noise given (``noise=``) the codes and
scales are the PyTorch path's bit for bit (on CPU, interpreted; a GPU may
fuse multiply-adds); matrix products sum in another order.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..quant.rounding import level_table
from ..seeds import hash_key, matrix_seed, sign_seed, stream_seed
from .triton_quant import level_position, rounding_mode

NOISE_SHIFT = 2.0**-17  # drawn offsets are (r + 1/2) / 2^16 for 16-bit r, as on the PyTorch path
MAX_FUSED_BLOCK = 2**13  # one program holds a block: larger blocks take the unfused path
_PROGRAM_ELEMENTS = 2048  # stored elements per compress program (whole blocks)
_DECOMPRESS_ELEMENTS = 1024  # output elements per decompress program
_DENSE_COLUMNS = 32  # input columns per step of the dense kinds' matrix product
_PRODUCT_ROWS = 4096  # rows per program of a transposed product (its partial sums: rows / 4096 tiles)
_PRODUCT_TILE = 64  # rows, left columns and restored columns per step of a transposed product
_SCALE_TYPES = {torch.float32: (tl.float32, tl.int32), torch.float16: (tl.float16, tl.int16)}
_SCALE_TYPES[torch.bfloat16] = (tl.bfloat16, tl.int16)
_OUT_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


DENSE = ("shared", "per_row")  # the kinds projected by a matrix, multiplied in the kernel
MAX_DENSE_WIDTH = 256  # k at most this for the dense kinds: a program holds k columns of its rows


def fusable(block_size: int, projection: str | None, dtype: torch.dtype, k: int | None = None) -> bool:
    r"""Whether the fused kernels take ``dtype`` tensors projected by
    ``projection`` to ``k`` columns (``None``: unprojected) and stored in
    blocks of ``block_size``: a dtype the decompress kernel writes, and whole
    bytes and Philox calls per block (a multiple of 8) within one program;
    the dense kinds also need :math:`k` and the block a power of two
    (:math:`16 \le k \le` :data:`MAX_DENSE_WIDTH`), so that a program's rows
    hold whole blocks."""
    if dtype not in _OUT_KINDS or block_size % 8 or block_size > MAX_FUSED_BLOCK:
        return False
    if projection in DENSE:
        if k is None or k & (k - 1) or block_size & (block_size - 1):
            return False
        return 16 <= k <= MAX_DENSE_WIDTH
    return projection in (None, "sketch")


@triton.jit
def _row_signs(row, column, words, key):
    r""":math:`s_{n,d} = 1 - 2 \cdot` bit :math:`d \bmod 64` of SplitMix64 at
    counter :math:`n \lceil D/64 \rceil + \lfloor d/64 \rfloor` of the stream
    keyed ``key`` (:func:`iexact.seeds.row_signs`, element by element)."""
    value = (row * words + column // 64).to(tl.uint64) + key.to(tl.uint64)
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB
    value = value ^ (value >> 31)
    bit = (value >> (column % 64).to(tl.uint64)) & 1
    return 1.0 - 2.0 * bit.to(tl.float32)


@triton.jit
def _centered(x_ptr, center_ptr, row, column, row_stride, present, HAS_CENTER: tl.constexpr):
    r""":math:`h_{n,d} - c_d` in float32 at rows ``row``, columns ``column``
    (:math:`h_{n,d}` without a center), 0 where not ``present``."""
    h = tl.load(x_ptr + row * row_stride + column, mask=present, other=0.0).to(tl.float32)
    if HAS_CENTER:
        h = tl.where(present, h - tl.load(center_ptr + column, mask=present, other=0.0), 0.0)
    return h


@triton.jit
def _stored_values(
    x_ptr, center_ptr, index, valid, row_stride, width, stored_width, first_row, sign_key, SLOTS, HAS_CENTER
):
    r"""The stored elements at chunk positions ``index``: the rows' centered
    values (``SLOTS`` 0), or the sketch :math:`z_j = \sum_s s_{n,c} (h_{n,c} - c_c)`
    over the columns :math:`c = j + s k` of bucket :math:`j`, summed slot after
    slot (a missing last column adds nothing, not even :math:`+0`)."""
    if SLOTS == 0:
        return _centered(x_ptr, center_ptr, index // width, index % width, row_stride, valid, HAS_CENTER)
    row = index // stored_width
    bucket = index % stored_width
    words = (width + 63) // 64
    signs = _row_signs(first_row + row, bucket, words, sign_key)
    z = _centered(x_ptr, center_ptr, row, bucket, row_stride, valid, HAS_CENTER) * signs
    for slot in tl.static_range(1, SLOTS):
        column = slot * stored_width + bucket
        present = valid & (column < width)
        signs = _row_signs(first_row + row, column, words, sign_key)
        value = _centered(x_ptr, center_ptr, row, column, row_stride, present, HAS_CENTER) * signs
        z = tl.where(present, z + value, z)
    return z


@triton.jit
def _outward(value, DTYPE: tl.constexpr, INT: tl.constexpr, UP: tl.constexpr):
    r"""``value`` (float32) in ``DTYPE``, rounded down (or ``UP``): the
    largest representable number :math:`\le` it (smallest :math:`\ge`), as
    :func:`iexact.quant.rounding.stored_scales` finds with ``nextafter``."""
    if DTYPE == tl.float32:
        return value
    near = value.to(DTYPE)
    bits = near.to(INT, bitcast=True)
    back = near.to(tl.float32)  # compared in float32: the interpreter holds bfloat16 as raw bits
    if UP:
        beyond = back < value
        moved = tl.where(back > 0, bits + 1, tl.where(back < 0, bits - 1, 1))
    else:
        beyond = back > value
        moved = tl.where(back > 0, bits - 1, tl.where(back < 0, bits + 1, -32767))
    return tl.where(beyond, moved.to(INT).to(DTYPE, bitcast=True), near)


@triton.jit
def _drawn_offsets(seed, block, block_size, BLOCKS: tl.constexpr, BLOCK_PAD: tl.constexpr):
    r"""Uniform offsets :math:`(r + 1/2)/2^{16} - 2^{-17}` (the shift is in the
    bias) for a ``(BLOCKS, BLOCK_PAD)`` tile of whole blocks: Philox
    (``randint4x``) at counter :math:`\lfloor i / 8 \rfloor` gives four 32-bit
    words, eight 16-bit draws, for elements :math:`8 \lfloor i/8 \rfloor` to
    :math:`8 \lfloor i/8 \rfloor + 7`."""
    group = block[:, None] * (block_size // 8) + tl.arange(0, BLOCK_PAD // 8)[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, group)
    halves = tl.join(
        tl.join(tl.join(r0 & 0xFFFF, r0 >> 16), tl.join(r1 & 0xFFFF, r1 >> 16)),
        tl.join(tl.join(r2 & 0xFFFF, r2 >> 16), tl.join(r3 & 0xFFFF, r3 >> 16)),
    )
    return tl.reshape(halves, (BLOCKS, BLOCK_PAD)).to(tl.float32) * (1.0 / 65536.0)


@triton.jit
def _block_scales(z, valid, live, SCALE: tl.constexpr, SCALE_INT: tl.constexpr):
    """Each row's (block's) stored min and step in ``SCALE``, rounded outward
    (:func:`iexact.quant.rounding.stored_scales`); NaN where the block holds
    NaN, which min and max alone may skip; zero for blocks not ``live``."""
    broken = tl.max(tl.where(valid & (z != z), 1, 0), axis=1) > 0
    low = tl.where(live, tl.min(tl.where(valid, z, float("inf")), axis=1), 0.0)
    low = _outward(low, SCALE, SCALE_INT, False)
    low = tl.where(broken, float("nan"), low.to(tl.float32)).to(SCALE)
    high = tl.where(live, tl.max(tl.where(valid, z, -float("inf")), axis=1), 0.0)
    return low, _outward(high - low.to(tl.float32), SCALE, SCALE_INT, True)


@triton.jit
def _store_packed(
    codes_ptr, code, block, block_size, numel, BITS: tl.constexpr, BLOCKS: tl.constexpr, BLOCK_PAD: tl.constexpr
):
    """Pack a ``(BLOCKS, BLOCK_PAD)`` tile of codes ``8/BITS`` per byte, first
    in the lowest bits, and store the bytes of its whole blocks."""
    PER_BYTE: tl.constexpr = 8 // BITS
    slot = tl.arange(0, PER_BYTE)
    packed = tl.sum(tl.reshape(code, (BLOCKS, BLOCK_PAD // PER_BYTE, PER_BYTE)) << (slot * BITS), axis=2)
    local = tl.arange(0, BLOCK_PAD // PER_BYTE)
    byte = block[:, None] * (block_size // PER_BYTE) + local[None, :]
    whole = (local[None, :] < block_size // PER_BYTE) & (byte * PER_BYTE < numel)
    tl.store(codes_ptr + byte, packed.to(tl.uint8), mask=whole)


# fmt: off
@triton.jit
def _compress_kernel(
    x_ptr, center_ptr, levels_ptr, slopes_ptr, noise_ptr, codes_ptr, mins_ptr, steps_ptr,
    numel, row_stride, width, stored_width, block_size, first_row, sign_key, noise_seed,
    gain_scale, bias_shift, shift, hinge_start, hinge_span, hinge_gain,
    BITS: tl.constexpr, MODE: tl.constexpr, HAS_NOISE: tl.constexpr, SLOTS: tl.constexpr, HAS_CENTER: tl.constexpr,
    BLOCKS: tl.constexpr, BLOCK_PAD: tl.constexpr, SCALE: tl.constexpr, SCALE_INT: tl.constexpr,
):
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    inner = tl.arange(0, BLOCK_PAD)
    index = block[:, None] * block_size + inner[None, :]
    valid = (inner[None, :] < block_size) & (index < numel)
    z = _stored_values(
        x_ptr, center_ptr, index, valid, row_stride, width, stored_width, first_row, sign_key, SLOTS, HAS_CENTER
    )
    outputs, tables = (mins_ptr, steps_ptr, codes_ptr), (levels_ptr, slopes_ptr)
    rounding = (gain_scale, bias_shift, shift, hinge_start, hinge_span, hinge_gain)
    _round_and_store(
        z, valid, block, index, block_size, numel, outputs, tables, noise_ptr, noise_seed, rounding,
        BITS, MODE, HAS_NOISE, BLOCKS, BLOCK_PAD, SCALE, SCALE_INT,
    )
# fmt: on


@triton.jit
def _round_and_store(
    z,
    valid,
    block,
    index,
    block_size,
    numel,
    outputs,
    tables,
    noise_ptr,
    noise_seed,
    rounding,
    BITS: tl.constexpr,
    MODE: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCKS: tl.constexpr,
    BLOCK_PAD: tl.constexpr,
    SCALE: tl.constexpr,
    SCALE_INT: tl.constexpr,
):
    """Store the scales of a ``(BLOCKS, BLOCK_PAD)`` tile ``z`` of whole blocks
    and its codes, stochastically rounded (``outputs``: mins, steps and codes
    pointers; ``tables``: levels and slopes; ``rounding``: the float arguments
    of :func:`_rounding_arguments`)."""
    TOP: tl.constexpr = (1 << BITS) - 1
    mins_ptr, steps_ptr, codes_ptr = outputs
    gain_scale, bias_shift, shift, hinge_start, hinge_span, hinge_gain = rounding
    # block range, NaN kept (min and max alone may skip it): the finite check reads the steps
    live = block * block_size < numel  # blocks past the end get a zero range, never stored
    low, step = _block_scales(z, valid, live, SCALE, SCALE_INT)
    tl.store(mins_ptr + block, low, mask=live)
    tl.store(steps_ptr + block, step, mask=live)
    step = step.to(tl.float32)
    positive = step > 0
    inverse = tl.math.div_rn(tl.full(step.shape, 1.0, tl.float32), tl.where(positive, step, 1.0))
    gain = tl.where(positive, inverse * gain_scale, 0.0)
    bias = bias_shift - low.to(tl.float32) * gain
    v = z * gain[:, None]
    v = v + bias[:, None]
    v = level_position(v, tables[0], tables[1], hinge_start, hinge_span, hinge_gain, shift, BITS, MODE)
    if HAS_NOISE:
        v = v + tl.load(noise_ptr + index, mask=valid, other=0.0)
    else:
        v = v + _drawn_offsets(noise_seed, block, block_size, BLOCKS, BLOCK_PAD)
    code = tl.where(valid, tl.minimum(v.to(tl.int32), TOP), 0)  # v >= 0: truncation is floor
    _store_packed(codes_ptr, code, block, block_size, numel, BITS, BLOCKS, BLOCK_PAD)


@triton.jit
def _dense_projected(
    x_ptr,
    center_ptr,
    row,
    rows,
    row_stride,
    width,
    first_row,
    sign_key,
    matrix_key,
    matrix_scale,
    K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PER_ROW: tl.constexpr,
    HAS_CENTER: tl.constexpr,
):
    r""":math:`Z = H' P` (``PER_ROW``: :math:`(H' \odot S) P`), :math:`H' = H - \mathbf 1 c^\top`, for the rows
    ``row``, :math:`(\text{BLOCK\_N}, K)` float32, :math:`P` hashed in place
    (:func:`iexact.quant.projection.rademacher`), ``BLOCK_D`` columns at a time."""
    column = tl.arange(0, K)
    acc = tl.zeros((row.shape[0], K), tl.float32)
    for start in range(0, width, BLOCK_D):
        d = start + tl.arange(0, BLOCK_D)
        inside = (row[:, None] < rows) & (d[None, :] < width)
        h = _centered(x_ptr, center_ptr, row[:, None], d[None, :], row_stride, inside, HAS_CENTER)
        if PER_ROW:
            h = h * _row_signs(first_row + row[:, None], d[None, :], (width + 63) // 64, sign_key)
        p = _row_signs(d[:, None], column[None, :], (K + 63) // 64, matrix_key) * matrix_scale
        acc += tl.dot(h, p, input_precision="ieee")
    return acc


# fmt: off
@triton.jit
def _compress_dense_kernel(
    x_ptr, center_ptr, levels_ptr, slopes_ptr, noise_ptr, codes_ptr, mins_ptr, steps_ptr,
    rows, row_stride, width, first_row, sign_key, matrix_key, matrix_scale, noise_seed,
    gain_scale, bias_shift, shift, hinge_start, hinge_span, hinge_gain,
    K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PER_ROW: tl.constexpr, G: tl.constexpr,
    BITS: tl.constexpr, MODE: tl.constexpr, HAS_NOISE: tl.constexpr, SCALE: tl.constexpr, SCALE_INT: tl.constexpr,
    HAS_CENTER: tl.constexpr,
):
    BLOCKS: tl.constexpr = BLOCK_N * K // G
    row = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _dense_projected(
        x_ptr, center_ptr, row, rows, row_stride, width, first_row, sign_key, matrix_key, matrix_scale,
        K, BLOCK_D, PER_ROW, HAS_CENTER,
    )
    z = tl.reshape(acc, (BLOCKS, G))  # row-major: the blocks of G stored elements of these rows
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    index = block[:, None] * G + tl.arange(0, G)[None, :]
    outputs, tables = (mins_ptr, steps_ptr, codes_ptr), (levels_ptr, slopes_ptr)
    rounding = (gain_scale, bias_shift, shift, hinge_start, hinge_span, hinge_gain)
    _round_and_store(
        z, index < rows * K, block, index, G, rows * K, outputs, tables, noise_ptr, noise_seed, rounding,
        BITS, MODE, HAS_NOISE, BLOCKS, G, SCALE, SCALE_INT,
    )
# fmt: on


@triton.jit
def _bfloat16_nearest(value):
    """``value`` (float32) rounded to the nearest bfloat16, ties to even, NaN
    kept (the interpreter's own conversion truncates)."""
    bits = value.to(tl.uint32, bitcast=True)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(tl.uint16)
    rounded = tl.where(value != value, 0x7FC0, rounded).to(tl.uint16)
    return rounded.to(tl.bfloat16, bitcast=True)


@triton.jit
def _dequantized(codes_ptr, mins_ptr, steps_ptr, levels_ptr, stored, valid, block_size, BITS: tl.constexpr):
    r""":math:`\hat z = \ell_{\text{code}} \, s / B + m` of the stored elements
    ``stored`` (:func:`iexact.quant.reference.unpack_dequantize`'s operations)."""
    TOP: tl.constexpr = (1 << BITS) - 1
    PER_BYTE: tl.constexpr = 8 // BITS
    block = stored // block_size
    packed = tl.load(codes_ptr + stored // PER_BYTE, mask=valid, other=0).to(tl.int32)
    code = (packed >> ((stored % PER_BYTE) * BITS).to(tl.int32)) & TOP
    step = tl.load(steps_ptr + block, mask=valid, other=0.0).to(tl.float32)
    scale = tl.math.div_rn(step, tl.full(code.shape, TOP, tl.float32))
    value = tl.load(levels_ptr + code, mask=valid, other=0.0) * scale
    return value + tl.load(mins_ptr + block, mask=valid, other=0.0).to(tl.float32)


@triton.jit
def _store_out(out_ptr, offsets, value, mask, OUT_KIND: tl.constexpr):
    """Store float32 ``value`` in the output's dtype (bfloat16 rounded to nearest even)."""
    if OUT_KIND == 2:
        tl.store(out_ptr + offsets, _bfloat16_nearest(value), mask=mask)
    else:
        tl.store(out_ptr + offsets, value, mask=mask)


@triton.jit
def _decompress_dense_kernel(
    codes_ptr,
    mins_ptr,
    steps_ptr,
    levels_ptr,
    center_ptr,
    out_ptr,
    rows,
    width,
    block_size,
    first_row,
    sign_key,
    matrix_key,
    matrix_scale,
    K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PER_ROW: tl.constexpr,
    BITS: tl.constexpr,
    OUT_KIND: tl.constexpr,
    HAS_CENTER: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    column = tl.arange(0, K)
    live = row[:, None] < rows
    stored = row[:, None] * K + column[None, :]
    z = _dequantized(codes_ptr, mins_ptr, steps_ptr, levels_ptr, stored, live, block_size, BITS)
    for start in range(0, width, BLOCK_D):
        d = start + tl.arange(0, BLOCK_D)
        transposed = _row_signs(d[None, :], column[:, None], (K + 63) // 64, matrix_key) * matrix_scale
        tile = tl.dot(z, transposed, input_precision="ieee")
        if PER_ROW:
            tile = tile * _row_signs(first_row + row[:, None], d[None, :], (width + 63) // 64, sign_key)
        if HAS_CENTER:
            tile = tile + tl.load(center_ptr + d, mask=d < width, other=0.0)[None, :]
        _store_out(out_ptr, row[:, None] * width + d[None, :], tile, live & (d[None, :] < width), OUT_KIND)


@triton.jit
def _decompress_kernel(
    codes_ptr,
    mins_ptr,
    steps_ptr,
    levels_ptr,
    center_ptr,
    out_ptr,
    total,
    width,
    stored_width,
    block_size,
    first_row,
    sign_key,
    BITS: tl.constexpr,
    PROJECTED: tl.constexpr,
    OUT_KIND: tl.constexpr,
    ELEMENTS: tl.constexpr,
    HAS_CENTER: tl.constexpr,
):
    index = tl.program_id(0).to(tl.int64) * ELEMENTS + tl.arange(0, ELEMENTS)
    valid = index < total
    row = index // width
    column = index % width
    if PROJECTED:  # the sketch: column d is bucket d mod k's
        stored = row * stored_width + column % stored_width
    else:
        stored = index
    value = _dequantized(codes_ptr, mins_ptr, steps_ptr, levels_ptr, stored, valid, block_size, BITS)
    if PROJECTED:
        value = value * _row_signs(first_row + row, column, (width + 63) // 64, sign_key)
    if HAS_CENTER:
        value = value + tl.load(center_ptr + column, mask=valid, other=0.0)
    _store_out(out_ptr, index, value, valid, OUT_KIND)


@triton.jit
def _transpose_products_kernel(
    codes_ptr,
    mins_ptr,
    steps_ptr,
    levels_ptr,
    center_ptr,
    left_ptr,
    partial_ptr,
    rows,
    chunk_rows,
    columns,
    stored_width,
    lefts,
    left_stride,
    block_size,
    first_row,
    sign_key,
    SKETCH: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_CENTER: tl.constexpr,
):
    r"""One chunk of rows' :math:`A_c^\top \hat H_c` for a ``(BLOCK_F, BLOCK_D)``
    tile, :math:`\hat H` decoded (and, for the sketch, restored with its
    signs; its center added) as the product's prologue, never written."""
    chunk = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_F, BLOCK_D), tl.float32)
    end = tl.minimum((chunk + 1) * chunk_rows, rows)
    for start in range(chunk * chunk_rows, end, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        live = n < end
        a = tl.load(
            left_ptr + n[:, None] * left_stride + f[None, :], mask=live[:, None] & (f[None, :] < lefts), other=0.0
        )
        inside = live[:, None] & (d[None, :] < columns)
        if SKETCH:
            stored = n[:, None] * stored_width + d[None, :] % stored_width
        else:
            stored = n[:, None] * stored_width + d[None, :]
        h = _dequantized(codes_ptr, mins_ptr, steps_ptr, levels_ptr, stored, inside, block_size, BITS)
        if SKETCH:
            h = h * _row_signs(first_row + n[:, None], d[None, :], (columns + 63) // 64, sign_key)
        if HAS_CENTER:
            h = tl.where(inside, h + tl.load(center_ptr + d, mask=d < columns, other=0.0)[None, :], 0.0)
        acc += tl.dot(tl.trans(a.to(tl.float32)), h, input_precision="ieee")
    offsets = chunk * lefts * columns + f[:, None] * columns + d[None, :]
    tl.store(partial_ptr + offsets, acc, mask=(f[:, None] < lefts) & (d[None, :] < columns))


def _rounding_arguments(levels: tuple[float, ...], bits: int, shift: float) -> tuple[int, tuple[float, ...]]:
    """``MODE`` and the float arguments ``gain_scale, bias_shift, shift, hinge_start,
    hinge_span, hinge_gain`` of :func:`_compress_kernel` for ``levels`` and the noise ``shift``."""
    mode, hinge, plan = rounding_mode(levels, shift)
    return mode, (float((2**bits - 1) * plan.s0), 0.0 if plan.search else shift, shift, *hinge)


def _dense_rows(block_size: int, k: int) -> int:
    """Rows per program of the dense kernels: at least 16 (``tl.dot``), whole blocks."""
    return max(16, block_size // k)


def compress_rows(
    rows: torch.Tensor,
    stored: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    kind: str | None,
    stored_width: int,
    block_size: int,
    bits: int,
    levels: tuple[float, ...],
    seed: int,
    first_row: int,
    offset: int,
    noise: torch.Tensor | None = None,
    center: torch.Tensor | None = None,
) -> None:
    r"""Compress ``rows`` :math:`(n, D)` (unit column stride) projected by
    ``kind`` (``None``: unprojected) to ``stored_width`` columns into
    ``stored`` = ``(codes, mins, steps)``, their slices for these rows: one
    launch. The signs hash :func:`iexact.seeds.sign_seed` of ``seed``, a
    dense kind's matrix :func:`iexact.seeds.matrix_seed`, the noise
    :func:`iexact.seeds.stream_seed` at ``offset``; ``first_row`` and
    ``offset`` place these rows in the whole tensor (in rows, in stored
    elements); ``noise`` gives the uniform offsets instead of drawing them;
    ``center`` :math:`c` (float32, :math:`D`) is subtracted from every row first.
    """
    codes, mins, steps = stored
    numel = rows.shape[0] * stored_width
    if numel == 0:
        return
    mode, rounding = _rounding_arguments(levels, bits, 0.0 if noise is not None else NOISE_SHIFT)
    table, slopes = level_table(tuple(levels), rows.device)
    scale, scale_int = _SCALE_TYPES[mins.dtype]
    centered = center if center is not None else table  # a pointer never read without a center
    pointers = (rows, centered, table, slopes, noise if noise is not None else table, codes, mins, steps)
    keys = (hash_key(sign_seed(seed)), stream_seed(seed, offset))
    constants = {"BITS": bits, "MODE": mode, "HAS_NOISE": noise is not None, "SCALE": scale, "SCALE_INT": scale_int}
    constants["HAS_CENTER"] = center is not None
    if kind in DENSE:
        block_rows = _dense_rows(block_size, stored_width)
        matrix = (hash_key(sign_seed(matrix_seed(seed))), 1.0 / math.sqrt(stored_width))
        sizes = (rows.shape[0], rows.stride(0), rows.shape[1], first_row, keys[0], *matrix, keys[1])
        layout = {"K": stored_width, "BLOCK_N": block_rows, "BLOCK_D": _DENSE_COLUMNS, "PER_ROW": kind == "per_row"}
        grid = (triton.cdiv(rows.shape[0], block_rows),)
        _compress_dense_kernel[grid](*pointers, *sizes, *rounding, G=block_size, **layout, **constants)
        return
    block_pad = triton.next_power_of_2(block_size)
    blocks = max(1, _PROGRAM_ELEMENTS // block_pad)
    sizes = (numel, rows.stride(0), rows.shape[1], stored_width, block_size, first_row, *keys)
    slots = 0 if kind is None else -(-rows.shape[1] // stored_width)
    grid = (triton.cdiv(math.ceil(numel / block_size), blocks),)
    _compress_kernel[grid](*pointers, *sizes, *rounding, SLOTS=slots, BLOCKS=blocks, BLOCK_PAD=block_pad, **constants)


def decompress_rows(
    codes: torch.Tensor,
    mins: torch.Tensor,
    steps: torch.Tensor,
    out: torch.Tensor,
    *,
    kind: str | None,
    stored_width: int,
    block_size: int,
    bits: int,
    levels: tuple[float, ...],
    seed: int,
    first_row: int,
    center: torch.Tensor | None = None,
) -> None:
    r"""Write :math:`\hat H` of these stored rows (projected by ``kind``,
    ``None``: unprojected; ``center`` :math:`c` added back) into ``out``
    :math:`(n, D)` (contiguous; float32, float16, bfloat16 or float64): one launch."""
    total = out.numel()
    if total == 0:
        return
    table, _ = level_table(tuple(levels), out.device)
    pointers = (codes, mins, steps, table, center if center is not None else table, out)
    if kind in DENSE:
        block_rows = _dense_rows(block_size, stored_width)
        _decompress_dense_kernel[(triton.cdiv(out.shape[0], block_rows),)](
            *pointers,
            out.shape[0],
            out.shape[1],
            block_size,
            first_row,
            hash_key(sign_seed(seed)),
            hash_key(sign_seed(matrix_seed(seed))),
            1.0 / math.sqrt(stored_width),
            K=stored_width,
            BLOCK_N=block_rows,
            BLOCK_D=_DENSE_COLUMNS,
            PER_ROW=kind == "per_row",
            BITS=bits,
            OUT_KIND=_OUT_KINDS[out.dtype],
            HAS_CENTER=center is not None,
        )
        return
    _decompress_kernel[(triton.cdiv(total, _DECOMPRESS_ELEMENTS),)](
        *pointers,
        total,
        out.shape[1],
        stored_width,
        block_size,
        first_row,
        hash_key(sign_seed(seed)),
        BITS=bits,
        PROJECTED=kind is not None,
        OUT_KIND=_OUT_KINDS[out.dtype],
        ELEMENTS=_DECOMPRESS_ELEMENTS,
        HAS_CENTER=center is not None,
    )


def transpose_product_rows(
    codes: torch.Tensor,
    mins: torch.Tensor,
    steps: torch.Tensor,
    left: torch.Tensor,
    *,
    kind: str | None,
    width: int,
    stored_width: int,
    block_size: int,
    bits: int,
    levels: tuple[float, ...],
    seed: int,
    first_row: int,
    center: torch.Tensor | None = None,
) -> torch.Tensor:
    r""":math:`A^\top \hat H` :math:`(F, D)` float32 for these stored rows and
    ``left`` :math:`A` :math:`(n, F)` (unit column stride), :math:`\hat H`
    decoded (``center`` :math:`c` added) inside the product; for a dense
    ``kind``, :math:`A^\top \hat Z` :math:`(F, k)` of the centered rows (the
    caller multiplies by :math:`P^\top` and adds :math:`(A^\top \mathbf 1) c^\top`).
    Two launches: chunks of :data:`_PRODUCT_ROWS` rows in parallel, then their sum."""
    rows, lefts = left.shape
    columns = stored_width if kind in DENSE else width
    if not (rows and lefts and columns):
        return torch.zeros(lefts, columns, dtype=torch.float32, device=left.device)
    chunks = triton.cdiv(rows, _PRODUCT_ROWS)
    partial = torch.empty(chunks, lefts, columns, dtype=torch.float32, device=left.device)  # every tile written
    table, _ = level_table(tuple(levels), left.device)
    grid = (chunks, triton.cdiv(lefts, _PRODUCT_TILE), triton.cdiv(columns, _PRODUCT_TILE))
    centered = center is not None and kind not in DENSE
    _transpose_products_kernel[grid](
        codes,
        mins,
        steps,
        table,
        center if centered else table,
        left,
        partial,
        rows,
        _PRODUCT_ROWS,
        columns,
        stored_width,
        lefts,
        left.stride(0),
        block_size,
        first_row,
        hash_key(sign_seed(seed)),
        SKETCH=kind == "sketch",
        BITS=bits,
        BLOCK_N=_PRODUCT_TILE,
        BLOCK_F=_PRODUCT_TILE,
        BLOCK_D=_PRODUCT_TILE,
        HAS_CENTER=centered,
    )
    return partial.sum(0)
