r"""Boolean masks stored at one bit per element (ReLU signs, keep-masks)."""

from __future__ import annotations

import functools
import math

import torch

MASK_CHUNK = 2**24  # mask elements packed per step (a multiple of 8): bounds the step's temporaries
SELECT_CHUNK = 2**21  # elements per step of selected packing: its int32 places take 8 MiB


_GATHER_LOW_BITS = 0x0102040810204080  # times a word of 0/1 bytes: byte i's bit at bit 56 + i, no carries
_SPREAD_BYTE = 0x0101010101010101  # times a byte: the byte in each of a word's 8 bytes
_BIT_OF_BYTE = 0x8040201008040201 - 2**64  # bit i of byte i (as the int64 torch stores)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    r"""Pack a boolean tensor, 8 elements per byte, first element in the lowest
    bit: each 8 booleans read as one little-endian word :math:`w` of 0/1
    bytes, the byte :math:`\lfloor w \cdot \text{0x0102040810204080} / 2^{56}
    \rfloor \bmod 256` (one multiply: the products' bits never overlap),
    :data:`MASK_CHUNK` elements at a time.

    Shapes:
        - **input:** any shape, :math:`n` elements
        - **output:** :math:`(\lceil n / 8 \rceil,)` uint8
    """
    flat = mask.reshape(-1)
    packed = torch.empty(-(-flat.numel() // 8), dtype=torch.uint8, device=mask.device)
    for start in range(0, flat.numel(), MASK_CHUNK):
        part = flat[start : start + MASK_CHUNK]
        packed[start // 8 : start // 8 + -(-part.numel() // 8)] = _pack_bits(part)
    return packed


def _pack_bits(part: torch.Tensor) -> torch.Tensor:
    """:func:`pack_mask` of one chunk: the booleans' own bytes where they form
    whole words, else a zero-padded copy (always under ``torch.compile``,
    whose graph cannot read a storage offset and fuses the copy)."""
    aligned = not torch.compiler.is_compiling() and part.dtype == torch.bool
    if aligned and part.numel() % 8 == 0 and part.storage_offset() % 8 == 0:
        codes = part.view(torch.uint8)
    else:
        codes = torch.zeros(-(-part.numel() // 8) * 8, dtype=torch.uint8, device=part.device)
        codes[: part.numel()] = part
    return ((codes.view(torch.int64) * _GATHER_LOW_BITS) >> 56).to(torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape`` (each byte
    spread to a word's 8 bytes, byte :math:`i` keeping bit :math:`i`)."""
    words = (packed.to(torch.int64) * _SPREAD_BYTE).bitwise_and_(_BIT_OF_BYTE)
    return words.view(torch.uint8).bool()[: shape.numel()].view(shape)


def pack_nonzero(values: torch.Tensor) -> torch.Tensor:
    """:func:`pack_mask` of ``values != 0`` (a scaled dropout mask's kept
    elements), :data:`SELECT_CHUNK` elements at a time: no boolean tensor of
    the full size."""
    return _pack_tested(values, _chosen)


def pack_positive(values: torch.Tensor) -> torch.Tensor:
    """:func:`pack_mask` of ``values > 0``, :data:`SELECT_CHUNK` elements at a time."""
    return _pack_tested(values, _set)


def _pack_tested(values: torch.Tensor, test) -> torch.Tensor:
    flat = values.reshape(-1)
    packed = torch.empty(-(-flat.numel() // 8), dtype=torch.uint8, device=values.device)
    for start in range(0, flat.numel(), SELECT_CHUNK):
        part = flat[start : start + SELECT_CHUNK]
        packed[start // 8 : start // 8 + -(-part.numel() // 8)] = _pack_bits(test(part))
    return packed


def unpacked_parts(packed: torch.Tensor, numel: int):
    """``(part, bits)`` per :data:`SELECT_CHUNK` of the ``numel`` elements
    :func:`pack_mask` packed: the slice and its booleans, unpacked a slice at a time."""
    for start in range(0, numel, SELECT_CHUNK):
        stop = min(start + SELECT_CHUNK, numel)
        yield slice(start, stop), unpack_mask(packed[start // 8 : -(-stop // 8)], torch.Size([stop - start]))


def selected_capacity(numel: int, keep: float) -> int:
    r"""Bits that hold the selected elements of :math:`n` = ``numel`` when each
    is selected independently with probability :math:`q` = ``keep`` (a
    dropout keep-mask), fixed before the draw so that no count is read back:
    :math:`\min(n, \lceil n q + 8 \sqrt{n q (1 - q)} \rceil + 64)`, a multiple
    of 8. The count exceeds it with probability below :math:`10^{-15}`
    (eight standard deviations of the binomial); :func:`pack_selected`
    refuses it then."""
    bound = math.ceil(numel * keep + 8 * math.sqrt(numel * keep * (1 - keep))) + 64
    return -(-min(numel, bound) // 8) * 8


def _chosen(selected: torch.Tensor) -> torch.Tensor:
    """``selected`` as booleans: itself, or its nonzero elements (a scaled keep-mask)."""
    return selected if selected.dtype == torch.bool else selected.bool()  # nonzero, as != 0 (4x faster)


def _set(bits: torch.Tensor) -> torch.Tensor:
    """``bits`` as booleans: itself, or its positive elements (an activation's signs)."""
    return bits if bits.dtype == torch.bool else bits > 0


@functools.lru_cache(maxsize=8)
def _group_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(extract, deposit, popcount)`` for groups of 8 elements held as bytes:
    ``extract[k << 8 | v]`` gathers the bits of ``v`` at the set bits of
    ``k`` into the lowest bits, in order (x86's ``pext``); ``deposit[k << 8 | c]``
    spreads the lowest bits of ``c`` back to the set bits of ``k`` (``pdep``);
    ``popcount[k]`` counts ``k``'s set bits. 64 KiB each, int32 (they index)."""
    keep = torch.arange(256, device=device).repeat_interleave(256)
    other = torch.arange(256, device=device).repeat(256)
    extract, deposit, rank = (torch.zeros(2**16, dtype=torch.int64, device=device) for _ in range(3))
    for bit in range(8):
        has = (keep >> bit) & 1
        extract |= (has * ((other >> bit) & 1)) << rank
        deposit |= (has * ((other >> rank) & 1)) << bit
        rank += has
    return extract.to(torch.int32), deposit.to(torch.int32), rank[::256].to(torch.int32)


def _groups(selected: torch.Tensor):
    """``(part, chosen, keep, starts, ends)`` per :data:`SELECT_CHUNK` elements
    of ``selected`` flattened: the part's slice, its selected elements
    (booleans), each group of 8 as a byte (``keep``, int32) and the bit range
    its selected elements take among all selected ones (int32 below
    :math:`2^{31}` elements). A count per group of 8, not per element; the
    running count stays on the device."""
    flat = selected.reshape(-1)
    dtype = torch.int32 if flat.numel() < 2**31 else torch.int64
    popcount = _group_tables(selected.device)[2]
    count = torch.zeros((), dtype=dtype, device=selected.device)
    for start in range(0, flat.numel(), SELECT_CHUNK):
        part = slice(start, min(start + SELECT_CHUNK, flat.numel()))
        chosen = _chosen(flat[part])
        keep = pack_mask(chosen).to(torch.int32)
        counts = popcount.index_select(0, keep)
        ends = torch.cumsum(counts, 0, dtype=dtype).add_(count)
        yield part, chosen, keep, ends - counts, ends
        count = ends[-1]


def pack_selected(bits: torch.Tensor, selected: torch.Tensor, capacity: int) -> torch.Tensor:
    r"""The ``bits`` of the ``selected`` elements only, in order, one bit each
    (first in the lowest bit) in ``capacity`` / 8 bytes: ``bits[selected]``
    packed, without reading the count back to the host. Per group of 8
    elements, the selected bits are gathered into the lowest bits of a byte
    (a 64 KiB table, :func:`_group_tables`) and written at the group's place, a
    cumulative count of the groups' sizes: at most two bytes each,
    :data:`SELECT_CHUNK` elements at a time. ``bits`` may be boolean or a
    float tensor whose positive elements are set (an activation);
    ``selected`` boolean or a tensor whose nonzero elements are selected (a
    scaled dropout mask). Raises (asynchronously on CUDA) when more than
    ``capacity`` elements are selected.

    Shapes:
        - **input:** ``bits``, ``selected``: the same shape, :math:`n` elements
        - **output:** :math:`(\text{capacity} / 8,)` uint8
    """
    packed = torch.zeros(capacity // 8, dtype=torch.uint8, device=bits.device)
    flat_bits, last_byte = bits.reshape(-1), max(capacity // 8 - 1, 0)
    extract = _group_tables(bits.device)[0]
    for part, chosen, keep, starts, ends in _groups(selected):
        values = pack_mask(_set(flat_bits[part]) & chosen).to(torch.int32)
        gathered = extract.index_select(0, (keep << 8) | values).to(starts.dtype) << (starts & 7)  # at most 15 bits
        byte = (starts >> 3).clamp_(0, last_byte)
        # distinct bits of a byte: the sums are their ORs
        packed.index_add_(0, byte, (gathered & 255).to(torch.uint8))
        packed.index_add_(0, byte.add_(1).clamp_(max=last_byte), (gathered >> 8).to(torch.uint8))
        # ends only grow: the last part's last end is the count
        torch._assert_async(ends[-1] <= capacity, "iexact: more elements selected than their packed bits hold")
    return packed


def selected_parts(packed: torch.Tensor, selected: torch.Tensor):
    """``(part, bits)`` per :data:`SELECT_CHUNK` elements of ``selected``
    flattened: what :func:`pack_selected` packed, unpacked for that slice (the
    stored bit where selected, ``False`` elsewhere)."""
    last_byte = max(packed.numel() - 1, 0)
    deposit = _group_tables(packed.device)[1]
    for part, _, keep, starts, ends in _groups(selected):
        byte = (starts >> 3).clamp_(0, last_byte)
        low, high = packed.index_select(0, byte), packed.index_select(0, byte.add_(1).clamp_(max=last_byte))
        words = low.to(starts.dtype) | (high.to(starts.dtype) << 8)
        gathered = (words >> (starts & 7)) & ((1 << (ends - starts)) - 1)
        values = deposit.index_select(0, (keep << 8) | gathered.to(torch.int32))
        yield part, unpack_mask(values.to(torch.uint8), torch.Size([part.stop - part.start]))


def unpack_selected(packed: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_selected` given the same ``selected``: the bits at
    the selected elements, ``False`` elsewhere, boolean, shaped as ``selected``."""
    out = torch.empty(selected.shape, dtype=torch.bool, device=selected.device)
    flat = out.view(-1)
    for part, bits in selected_parts(packed, selected):
        flat[part] = bits
    return out
