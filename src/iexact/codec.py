r"""``compress`` / ``decompress``: projection, then block-wise quantization.

.. math::
    \text{compress}(H) = \text{pack}(\text{round}(\text{blocks}(f(H)))), \qquad
    \text{decompress} = g(\hat Z), \qquad
    \mathbb{E}[\text{decompress}(\text{compress}(H))] = H,

with :math:`f, g` the seeded projection of the config's kind and its inverse
(:mod:`iexact.quant.projection`; :math:`f(H) = HP`, :math:`g(Z) = ZP^\top` for
the shared kind).

On CPU both directions stream over chunks of rows small enough to stay in
cache (projection, block ranges, rounding and packing of one chunk before the
next), so no full-size temporary is ever allocated. On the Triton path (CUDA)
a chunk is up to :math:`2^{30}` stored elements, so that no kernel index
reaches :math:`2^{31}`, and for the layouts the fused kernels take
(:func:`iexact.kernels.triton_codec.fusable`: blocks of a multiple of 8
elements; for the dense kinds :math:`k` and the block powers of two) a chunk
is one launch each way (:mod:`iexact.kernels.triton_codec`): the input read
once, codes and scales written once, a dense kind's product by :math:`P`
computed in the same program.
"""

from __future__ import annotations

import math

import torch

from . import kernels
from .config import CompressionConfig
from .quant.levels import levels_for
from .quant.packed import PackedActivation
from .quant.projection import Projection, projected_width
from .quant.reference import block_min_max
from .quant.rounding import num_blocks, packed_size, stored_scales
from .seeds import check_seed, draw_seed

__all__ = [
    "NonFiniteError",
    "compress",
    "decompress",
    "normalized_values",
    "stored_bytes",
    "stored_sizes",
    "transpose_products",
]


class NonFiniteError(ValueError):
    """A tensor to compress holds NaN or Inf (training that diverged, mostly)."""


CENTER_ROWS = 64
r"""With ``config.center``, a projected tensor of at least this many rows is
stored centered: :math:`H - \mathbf 1 c^\top` is compressed and :math:`c`
(float32, :math:`D` values) kept, with :math:`c`
the mean of every :math:`\lfloor N / 64 \rfloor`-th row (64 to 127 rows read,
not the whole tensor). Any stored :math:`c` keeps the estimate unbiased; the
mean removes the columns' common offset from what is rounded and projected,
whose noise grows with it (the sketch's variance is :math:`(D/k - 1)
\lVert h - c \rVert^2` summed over a row, least at the mean; post-ReLU rows
are far from zero-mean). An unprojected tensor is stored as it is: its
rounding keeps a ReLU's zeros exact where they are a block's minimum, which
a center would move off the levels (the reference GraphSAGE on ``synthetic``
stored at INT2 unprojected, ``iexact bench gradients``: gradient error 0.088
as it is, 0.181 centered)."""
CPU_CHUNK_ELEMENTS = 2**20  # stored elements per chunk on the PyTorch path: 4 MiB of float32
KERNEL_CHUNK_ELEMENTS = 2**30  # at most this many per chunk on the Triton path: its indices are int32


def _chunk_elements(numel: int, width: int, block_size: int, device: torch.device) -> int:
    """Elements per chunk: whole rows, whole blocks and whole bytes (a multiple
    of ``lcm(width, G, 8)``), about :data:`CPU_CHUNK_ELEMENTS` on the PyTorch
    path; on the Triton path the whole tensor when it has at most
    :data:`KERNEL_CHUNK_ELEMENTS`, else the largest multiple below that."""
    unit = math.lcm(width, block_size, 8)
    if kernels.uses_triton(device):
        if numel <= KERNEL_CHUNK_ELEMENTS:
            return max(numel, 1)
        if unit > KERNEL_CHUNK_ELEMENTS:
            raise ValueError(
                f"rows of {width} stored elements in blocks of {block_size} exceed the Triton "
                f"kernels' chunk of {KERNEL_CHUNK_ELEMENTS:,} elements: use a smaller block size"
            )
        return KERNEL_CHUNK_ELEMENTS // unit * unit
    if numel == 0:
        return 1
    return max(1, CPU_CHUNK_ELEMENTS // unit) * unit


def centered(shape: tuple[int, ...], config: CompressionConfig) -> bool:
    """Whether a tensor of ``shape`` is stored centered under ``config``: with
    ``config.center``, projected, and of at least :data:`CENTER_ROWS` rows."""
    width = shape[-1] if len(shape) else 1
    if not (config.center and width and projected_width(width, config.rp_ratio) is not None):
        return False
    return math.prod(shape) // width >= CENTER_ROWS


def column_center(x: torch.Tensor) -> torch.Tensor:
    r""":math:`c`: the float32 mean of every :math:`\lfloor N / 64 \rfloor`-th row
    of ``x`` :math:`(*, D)` (:data:`CENTER_ROWS`), one small read on the device;
    0 in a column whose mean is NaN or infinite, so that a non-finite element
    stays in its own block (the finite check's concern), not in every row.

    Shapes:
        - **output:** :math:`(D,)`
    """
    rows = x.reshape(-1, x.shape[-1])
    sample = rows[:: max(1, rows.shape[0] // CENTER_ROWS)]
    if sample.stride(-1) != 1:  # summed as its contiguous copy would be: the same center whatever the strides
        sample = sample.contiguous()
    return sample.mean(0, dtype=torch.float32).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def stored_sizes(shape: tuple[int, ...], config: CompressionConfig) -> tuple[int | None, int, int, int]:
    r"""``(k, G, code_bytes, blocks)`` of a tensor of ``shape`` compressed with
    ``config``: the projected width (``None`` without projection), the block
    size, :math:`\lceil N k b / 8 \rceil` and :math:`\lceil N k / G \rceil`.
    Plain arithmetic on the shape: nothing is computed on data."""
    width = shape[-1] if len(shape) else 1
    rows = math.prod(shape) // width if width else 0
    k = projected_width(width, config.rp_ratio) if width else None
    stored_width = k or width
    block_size = config.block_elements(stored_width)
    numel = rows * stored_width
    return k, block_size, packed_size(numel, config.bits), num_blocks(numel, block_size)


def stored_bytes(shape: tuple[int, ...], config: CompressionConfig) -> int:
    r"""Bytes a tensor of ``shape`` keeps once compressed with ``config``: its codes,
    two scales per block, when centered (:func:`centered`) its :math:`4D`-byte
    center and, when projected, the projection's 8-byte seed,
    :math:`\lceil N k b / 8 \rceil + 2 \lceil N k / G \rceil \cdot
    \mathrm{sizeof(scale)} + 4D + 8` (what :func:`iexact.activation_memory` counts
    for one compressed tensor). Plain arithmetic on the shape."""
    k, _, code_bytes, blocks = stored_sizes(shape, config)
    center = 4 * shape[-1] if centered(shape, config) else 0
    return code_bytes + 2 * blocks * config.scale_dtype.itemsize + center + (8 if k is not None else 0)


def compress(
    x: torch.Tensor, config: CompressionConfig, seed: int | None = None, *, check: bool = True
) -> PackedActivation:
    r"""Compress ``x`` as ``config`` says.

    The last dimension is the feature axis :math:`D`; all others are rows.
    With ``config.center``, a projected tensor of at least :data:`CENTER_ROWS`
    rows is centered first (:func:`column_center`).

    Args:
        x (torch.Tensor): floating-point tensor of any shape, finite.
        config (CompressionConfig): how to compress.
        seed (int, optional): seed of the projection and of the rounding
            noise, in :math:`[0, 2^{62})`; drawn from torch's global generator
            when ``None``.
        check (bool, optional): run ``config.check_finite`` here (one read
            from the device); ``False`` leaves it to the caller, as a
            converted model's forward does once for all its compressions
            (:func:`non_finite_error`). (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(*, D)`
        - **output:** a :class:`PackedActivation` of
          :math:`\lceil N k b / 8 \rceil` code bytes,
          :math:`2 \lceil N k / G \rceil` scales and a center of :math:`D`.

    Raises:
        TypeError: ``x`` is no floating-point ``torch.Tensor``, or ``config``
            is no :class:`CompressionConfig`.
        NonFiniteError: ``x`` holds NaN or Inf (or values whose block range or
            projection overflows) and ``config.check_finite``; ``seed`` is
            out of range.
    """
    if not isinstance(x, torch.Tensor):
        kind = type(x).__name__ if type(x).__module__ == "builtins" else f"{type(x).__module__}.{type(x).__name__}"
        raise TypeError(f"compress needs a torch.Tensor, got {kind}: convert it first (torch.as_tensor)")
    if not isinstance(config, CompressionConfig):
        raise TypeError(f"config must be an iexact.CompressionConfig, got {type(config).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"compress needs a floating-point tensor, got dtype {x.dtype}")
    x = x.detach()  # what is stored is data: no autograd graph may hang on the scales
    seed = draw_seed() if seed is None else check_seed(seed)
    k, block_size, code_bytes, blocks = stored_sizes(x.shape, config)
    levels = levels_for(config.levels, config.bits, block_size)
    codes = torch.empty(code_bytes, dtype=torch.uint8, device=x.device)
    mins = torch.empty(blocks, dtype=config.scale_dtype, device=x.device)
    steps = torch.empty(blocks, dtype=config.scale_dtype, device=x.device)
    kind = config.projection if k is not None else None
    center = column_center(x) if centered(x.shape, config) else None
    fill = _compress_fused if kernels.fused(x.device, block_size, kind, x.dtype, k) else _compress_chunks
    fill(x, config, seed, (codes, mins, steps), levels, center)
    # NaN or Inf anywhere in a block makes its step NaN or Inf: one check at the end (a host sync)
    if check and config.check_finite and not bool(torch.isfinite(steps).all()):
        raise non_finite_error(tuple(x.shape), x.dtype, config)
    return PackedActivation(
        codes, mins, steps, x.shape, x.dtype, config.bits, block_size, levels, k, seed, config.projection, center
    )


def non_finite_error(shape: tuple, dtype: torch.dtype, config: CompressionConfig) -> NonFiniteError:
    """The error :func:`compress` raises for a tensor of ``shape`` and ``dtype``
    holding NaN or Inf; for fp16 it names the setting a ``GradScaler`` user wants."""
    where = " after the random projection" if stored_sizes(shape, config)[0] is not None else ""
    scaler = (
        "; under fp16 autocast with a GradScaler, CompressionConfig(check_finite=False) lets the overflow "
        "reach the scaler as NaN gradients (the step skipped, as without iexact)"
        if dtype == torch.float16
        else ""
    )
    return NonFiniteError(
        f"cannot compress a tensor of shape {shape}: it holds NaN or Inf{where} "
        f"(or values whose block range overflows {config.scale_dtype}){scaler}"
    )


def normalized_values(x: torch.Tensor, config: CompressionConfig, seed: int) -> torch.Tensor:
    r"""The values :func:`compress` rounds: each stored element on its block's
    normalized axis :math:`u = (z - m) B / s \in [0, B]`, after the centering,
    the projection and with the stored (outward-rounded) scales, as :func:`compress` with the
    same ``seed`` computes them. Constant blocks (:math:`s = 0`) give 0.

    Shapes:
        - **input:** :math:`(*, D)`
        - **output:** float32 :math:`(N k,)`, the stored elements in order
    """
    width = x.shape[-1] if x.dim() else 1
    k, block_size, _, _ = stored_sizes(x.shape, config)
    top = 2**config.bits - 1
    out = torch.empty((x.numel() // width if width else 0) * (k or width), dtype=torch.float32, device=x.device)
    center = column_center(x.detach()) if centered(x.shape, config) else None
    for start, z, low, step in _scaled_chunks(x.detach(), config, seed, center):
        per_element = torch.arange(z.numel(), device=z.device) // block_size
        scale = step.float()[per_element]
        out[start : start + z.numel()] = torch.where(
            scale > 0, (z - low.float()[per_element]) * top / scale.clamp(min=1e-38), 0.0
        )
    return out


def _compress_chunks(
    x: torch.Tensor, config: CompressionConfig, seed: int, stored: tuple, levels: tuple, center: torch.Tensor | None
) -> None:
    """Fill ``stored`` = ``(codes, mins, steps)`` chunk by chunk: the centered,
    projected values and their scales (:func:`_scaled_chunks`), then
    :func:`~iexact.kernels.quantize_pack` of each chunk."""
    codes, mins, steps = stored
    block_size = stored_sizes(x.shape, config)[1]
    for start, z, low, step in _scaled_chunks(x, config, seed, center):
        first, last = start // block_size, start // block_size + low.numel()
        mins[first:last], steps[first:last] = low, step
        codes[start * config.bits // 8 : packed_size(start + z.numel(), config.bits)] = kernels.quantize_pack(
            z, mins[first:last], steps[first:last], block_size, config.bits, levels, seed, start
        )


def _compress_fused(
    x: torch.Tensor, config: CompressionConfig, seed: int, stored: tuple, levels: tuple, center: torch.Tensor | None
) -> None:
    """Fill ``stored`` = ``(codes, mins, steps)`` with the fused kernel
    (:func:`iexact.kernels.triton_codec.compress_rows`), one launch per chunk:
    the same codes and scales :func:`_scaled_chunks` and
    :func:`~iexact.kernels.quantize_pack` make for the same noise."""
    from .kernels import triton_codec

    width = x.shape[-1] if x.dim() else 1
    rows_view = x.reshape(x.numel() // width if width else 0, width)
    if rows_view.stride(-1) != 1:
        rows_view = rows_view.contiguous()
    k, block_size, _, _ = stored_sizes(x.shape, config)
    stored_width = k or width
    numel = rows_view.shape[0] * stored_width
    chunk = _chunk_elements(numel, stored_width, block_size, x.device)
    for start in range(0, numel, chunk):
        end = min(start + chunk, numel)
        triton_codec.compress_rows(
            rows_view[start // stored_width : end // stored_width],
            _stored_range(stored, config.bits, block_size, start, end),
            kind=config.projection if k is not None else None,
            stored_width=stored_width,
            block_size=block_size,
            bits=config.bits,
            levels=levels,
            seed=seed,
            first_row=start // stored_width,
            offset=start,
            center=center,
        )


def _scaled_chunks(x: torch.Tensor, config: CompressionConfig, seed: int, center: torch.Tensor | None):
    r"""``(start, z, mins, steps)`` chunk by chunk: the stored elements of
    :math:`H - \mathbf 1 c^\top` (``center`` :math:`c`, or none) projected
    from position ``start`` (float32, a fresh tensor the caller may overwrite)
    and their blocks' stored scales (:func:`~iexact.quant.rounding.stored_scales`):
    what :func:`compress` rounds and :func:`normalized_values` reports."""
    width = x.shape[-1] if x.dim() else 1
    rows = x.numel() // width if width else 0
    k, block_size, _, _ = stored_sizes(x.shape, config)
    stored_width = k or width
    numel = rows * stored_width
    projection = Projection(config.projection, width, k, seed, x.device) if k is not None else None
    rows_view = x.reshape(rows, width)
    chunk = _chunk_elements(numel, stored_width, block_size, x.device)
    for start in range(0, numel, chunk):
        part = rows_view[start // stored_width : min(start + chunk, numel) // stored_width]
        if center is not None:  # in float32, as the fused kernel subtracts, into a fresh row-major tensor
            fresh = torch.empty(part.shape, dtype=torch.float32, device=part.device)
            part = torch.sub(part.to(torch.float32), center, out=fresh)
        if projection is None:
            z = part.to(torch.float32, memory_format=torch.contiguous_format, copy=True).view(-1)
        else:
            z = projection.forward(part, start // stored_width).view(-1)
        yield (start, z, *stored_scales(*block_min_max(z, block_size), config.scale_dtype))


def decompress(packed: PackedActivation, out: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
    r"""The unbiased estimate :math:`\hat H = g(\hat Z)` of the compressed tensor.

    Args:
        packed (PackedActivation): what :func:`compress` returned.
        out (torch.Tensor, optional): contiguous tensor of the original shape,
            dtype and device to write into. On CPU, reusing one saves the
            page faults of a fresh allocation, which for large outputs cost
            more than the arithmetic.
        check (bool, optional): check the steps' values first
            (:meth:`PackedActivation.check_values`, one read from the device);
            iexact's own backward passes skip it. (default: :obj:`True`)

    Shapes:
        - **output:** the original shape and dtype.
    """
    if not isinstance(packed, PackedActivation):
        raise TypeError(f"decompress needs a PackedActivation, got {type(packed).__name__}")
    if check:
        packed.check_values()
    if out is None:
        out = torch.empty(packed.shape, dtype=packed.dtype, device=packed.device)
    elif (
        out.shape != packed.shape or out.dtype != packed.dtype or not out.is_contiguous() or out.device != packed.device
    ):
        raise ValueError(
            f"out must be a contiguous {packed.dtype} tensor of shape {tuple(packed.shape)} on "
            f"{packed.device}, got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    rows_out = out.view(packed.rows, packed.width)
    if _fused(packed):
        for first_row, target in _row_chunks(packed, rows_out):
            _decompress_fused(packed, first_row, target)
        return out
    projection, center = _projection(packed), packed.center
    for first_row, z in _stored_chunks(packed):
        target = rows_out[first_row : first_row + z.shape[0]]
        if projection is None:
            target.copy_(z)
        elif center is None:
            projection.inverse(z, first_row, out=target)
        else:  # restored in float32, the center added, rounded once into out
            torch.add(projection.inverse(z, first_row), center, out=target)
    return out


Held = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # codes, mins, steps


def _stored_range(stored: Held, bits: int, block_size: int, start: int, end: int) -> Held:
    """The ``(codes, mins, steps)`` of stored elements ``start`` to ``end`` (views;
    ``start`` on a block and byte boundary, as every chunk starts)."""
    codes, mins, steps = stored
    blocks = slice(start // block_size, num_blocks(end, block_size))
    return codes[start * bits // 8 : packed_size(end, bits)], mins[blocks], steps[blocks]


def _fused_rows(packed: PackedActivation, first_row: int, rows: int) -> tuple[Held, dict]:
    """What the fused kernels take of ``packed`` for ``rows`` rows from
    ``first_row``: its stored tensors there (:func:`_stored_range`) and the
    layout keywords (kind, widths, block, bits, levels, seed, first row)."""
    stored_width = packed.projected_width or packed.width
    held: Held = (packed.codes, packed.mins, packed.steps)
    start, end = first_row * stored_width, (first_row + rows) * stored_width
    layout = {
        "kind": _kind(packed),
        "stored_width": stored_width,
        "block_size": packed.block_size,
        "bits": packed.bits,
        "levels": packed.levels,
        "seed": packed.seed,
        "first_row": first_row,
        "center": packed.center,
    }
    return _stored_range(held, packed.bits, packed.block_size, start, end), layout


def _kind(packed: PackedActivation) -> str | None:
    """The projection kind of ``packed``, ``None`` unprojected."""
    return packed.projection if packed.projected_width is not None else None


def _fused(packed: PackedActivation) -> bool:
    return kernels.fused(packed.device, packed.block_size, _kind(packed), packed.dtype, packed.projected_width)


def _row_chunks(packed: PackedActivation, rows: torch.Tensor):
    """``(first_row, rows[chunk])``: the rows of ``rows`` (as many as ``packed``
    holds) cut where :func:`_stored_chunks` cuts the stored elements."""
    stored_width = packed.projected_width or packed.width
    chunk = _chunk_elements(packed.numel, stored_width, packed.block_size, packed.device) // stored_width
    for first_row in range(0, packed.rows, max(chunk, 1)):
        yield first_row, rows[first_row : first_row + chunk]


def _decompress_fused(packed: PackedActivation, first_row: int, out: torch.Tensor) -> None:
    """Write the rows of ``packed`` from ``first_row`` into ``out`` (contiguous
    :math:`(n, D)`) with the fused kernel, one launch
    (:func:`iexact.kernels.triton_codec.decompress_rows`)."""
    from .kernels import triton_codec

    held, layout = _fused_rows(packed, first_row, out.shape[0])
    triton_codec.decompress_rows(*held, out, **layout)


def transpose_products(packed: PackedActivation, *lefts: torch.Tensor) -> list[torch.Tensor]:
    r""":math:`A_j^\top \hat H` for each :math:`A_j` :math:`(N, F_j)`, never
    materializing the whole :math:`\hat H`. With the shared projection
    :math:`A^\top \hat H = (A^\top \hat Z) P^\top + (A^\top \mathbf 1) c^\top`
    (:math:`c` the center, if any), so only :math:`\hat Z`
    (:math:`N \times k`) is built, once for all :math:`A_j`; the row-wise kinds
    restore :math:`\hat H` chunk by chunk and sum :math:`A_c^\top \hat H_c`.
    A Linear layer's weight gradient :math:`dY^\top \hat X` is one such product.

    Shapes:
        - **input:** ``packed`` of :math:`(N, D)` rows (leading dims flattened), each :math:`A_j` :math:`(N, F_j)`
        - **output:** one float32 :math:`(F_j, D)` per :math:`A_j`
    """
    projection = _projection(packed)
    if _fused(packed) and (projection is None or projection.kind != "per_row"):  # per_row's signs follow P^T
        products = [_product_fused(packed, left) for left in lefts]  # the center added in the kernel
        if projection is None or projection.kind == "sketch":
            return products
        return _centered_products([product @ projection.transpose for product in products], lefts, packed.center)
    floats = [left.float() for left in lefts]
    if projection is None or projection.kind == "shared":
        stored = torch.empty(
            packed.rows, packed.projected_width or packed.width, dtype=torch.float32, device=packed.device
        )
        for first_row, z in _stored_chunks(packed):
            stored[first_row : first_row + z.shape[0]] = z
        products = [left.t() @ stored for left in floats]
        products = products if projection is None else [product @ projection.transpose for product in products]
        return _centered_products(products, floats, packed.center)
    products = [left.new_zeros(left.shape[1], packed.width) for left in floats]
    for first_row, restored in _restored_chunks(packed, projection):
        for product, left in zip(products, floats, strict=True):
            product.addmm_(left[first_row : first_row + restored.shape[0]].t(), restored)
    return products


def _centered_products(
    products: list[torch.Tensor], lefts: tuple | list, center: torch.Tensor | None
) -> list[torch.Tensor]:
    r"""Each :math:`A_j^\top \hat Z'` (of the centered rows) plus
    :math:`(A_j^\top \mathbf 1) c^\top`: :math:`A_j^\top \hat H`."""
    if center is None:
        return products
    return [
        product.addr_(left.sum(0, dtype=torch.float32), center) for product, left in zip(products, lefts, strict=True)
    ]


def _restored_chunks(packed: PackedActivation, projection: Projection):
    r"""``(first_row, rows)`` of :math:`\hat H` in float32, chunk by chunk:
    written by the fused decompress where it takes ``packed``, else
    dequantized, restored by ``projection`` and the center added."""
    if _fused(packed):
        buffer = torch.empty(packed.rows, packed.width, dtype=torch.float32, device=packed.device)
        for first_row, target in _row_chunks(packed, buffer):
            _decompress_fused(packed, first_row, target)
            yield first_row, target
        return
    for first_row, z in _stored_chunks(packed):
        restored = projection.inverse(z, first_row)
        yield first_row, restored if packed.center is None else restored.add_(packed.center)


def _product_fused(packed: PackedActivation, left: torch.Tensor) -> torch.Tensor:
    r""":math:`A^\top \hat H` (:math:`A^\top \hat Z` for a dense kind) by the
    fused kernel (:func:`iexact.kernels.triton_codec.transpose_product_rows`),
    summed over the codec's chunks; :math:`\hat H` is never written."""
    from .kernels import triton_codec

    left = left if left.stride(-1) == 1 else left.contiguous()
    total = None
    for first_row, part in _row_chunks(packed, left):
        held, layout = _fused_rows(packed, first_row, part.shape[0])
        product = triton_codec.transpose_product_rows(*held, part, width=packed.width, **layout)
        total = product if total is None else total.add_(product)
    if total is None:  # no rows: a zero product
        columns = packed.projected_width if packed.projected_width and packed.projection != "sketch" else packed.width
        return torch.zeros(left.shape[1], columns, dtype=torch.float32, device=left.device)
    return total


def _projection(packed: PackedActivation) -> Projection | None:
    """The projection of ``packed``, regenerated from its seed; ``None`` without one."""
    k = packed.projected_width
    return None if k is None else Projection(packed.projection, packed.width, k, packed.seed, packed.device)


def _stored_chunks(packed: PackedActivation):
    """``(first_row, rows)`` of dequantized stored rows, chunk by chunk."""
    stored_width = packed.projected_width or packed.width
    numel = packed.numel
    chunk = _chunk_elements(numel, stored_width, packed.block_size, packed.device)
    for start in range(0, numel, chunk):
        end = min(start + chunk, numel)
        z = kernels.unpack_dequantize(
            *_stored_range((packed.codes, packed.mins, packed.steps), packed.bits, packed.block_size, start, end),
            packed.block_size,
            packed.bits,
            packed.levels,
            end - start,
        )
        yield start // stored_width, z.view(-1, stored_width)
