r"""Boolean masks stored at one bit per element (ReLU signs, keep-masks)."""

from __future__ import annotations

import math

import torch

from .reference import pack_codes

MASK_CHUNK = 2**24  # mask elements packed per step (a multiple of 8): bounds the step's temporaries
SELECT_CHUNK = 2**21  # elements per step of selected packing: its int32 places take 8 MiB


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    r"""Pack a boolean tensor, 8 elements per byte, first element in the lowest bit,
    :data:`MASK_CHUNK` elements at a time (packing reads each byte's 8 codes
    as one word: the whole mask at once would take 4 more bytes per element
    in temporaries, a full-width float tensor's worth).

    Shapes:
        - **input:** any shape, :math:`n` elements
        - **output:** :math:`(\lceil n / 8 \rceil,)` uint8
    """
    flat = mask.reshape(-1)
    packed = torch.empty(-(-flat.numel() // 8), dtype=torch.uint8, device=mask.device)
    for start in range(0, flat.numel(), MASK_CHUNK):
        part = flat[start : start + MASK_CHUNK]
        codes = torch.zeros(-(-part.numel() // 8) * 8, dtype=torch.uint8, device=mask.device)
        codes[: part.numel()] = part
        packed[start // 8 : start // 8 + codes.numel() // 8] = pack_codes(codes, 1)
    return packed


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape``."""
    numel = shape.numel()
    bits = torch.arange(8, device=packed.device)
    table = ((torch.arange(256, device=packed.device).unsqueeze(1) >> bits) & 1).to(torch.bool)
    return table.index_select(0, packed.to(torch.int32)).view(-1)[:numel].view(shape)


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
    return selected if selected.dtype == torch.bool else selected != 0


def _set(bits: torch.Tensor) -> torch.Tensor:
    """``bits`` as booleans: itself, or its positive elements (an activation's signs)."""
    return bits if bits.dtype == torch.bool else bits > 0


def _places(selected: torch.Tensor):
    """``(part, chosen, places)`` per :data:`SELECT_CHUNK` elements of ``selected``
    flattened: the part's slice, its selected elements (booleans) and each
    element's place among all selected ones (that of the last selected before it
    where it is not; -1 before any), int32 below :math:`2^{31}` elements. The
    running count stays on the device."""
    flat = selected.reshape(-1)
    dtype = torch.int32 if flat.numel() < 2**31 else torch.int64
    count = torch.zeros((), dtype=dtype, device=selected.device)
    for start in range(0, flat.numel(), SELECT_CHUNK):
        part = slice(start, min(start + SELECT_CHUNK, flat.numel()))
        chosen = _chosen(flat[part])
        places = torch.cumsum(chosen, 0, dtype=dtype).add_(count - 1)
        yield part, chosen, places
        count = places[-1] + 1


def pack_selected(bits: torch.Tensor, selected: torch.Tensor, capacity: int) -> torch.Tensor:
    r"""The ``bits`` of the ``selected`` elements only, in order, one bit each
    (first in the lowest bit) in ``capacity`` / 8 bytes: ``bits[selected]``
    packed, without reading the count back to the host. A cumulative count of
    ``selected`` places each bit, :data:`SELECT_CHUNK` elements at a time, so
    no temporary is as large as the inputs. ``bits`` may be boolean or a
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
    for part, chosen, places in _places(selected):
        values = (_set(flat_bits[part]) & chosen).to(torch.uint8) << (places & 7).to(torch.uint8)
        packed.index_add_(0, (places >> 3).clamp_(0, last_byte), values)  # distinct bits of a byte: the sum is their OR
        # places only grow: the last part's last place is the count less one
        torch._assert_async(places[-1] < capacity, "iexact: more elements selected than their packed bits hold")
    return packed


def selected_parts(packed: torch.Tensor, selected: torch.Tensor):
    """``(part, bits)`` per :data:`SELECT_CHUNK` elements of ``selected``
    flattened: what :func:`pack_selected` packed, unpacked for that slice (the
    stored bit where selected, ``False`` elsewhere)."""
    last_byte = max(packed.numel() - 1, 0)
    for part, chosen, places in _places(selected):
        words = packed[(places >> 3).clamp_(0, last_byte)]
        yield part, ((words >> (places & 7).to(torch.uint8)) & 1).bool() & chosen


def unpack_selected(packed: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_selected` given the same ``selected``: the bits at
    the selected elements, ``False`` elsewhere, boolean, shaped as ``selected``."""
    out = torch.empty(selected.shape, dtype=torch.bool, device=selected.device)
    flat = out.view(-1)
    for part, bits in selected_parts(packed, selected):
        flat[part] = bits
    return out
