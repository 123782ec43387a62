r"""Boolean masks stored at one bit per element (ReLU signs, keep-masks)."""

from __future__ import annotations

import torch

from .reference import pack_codes

MASK_CHUNK = 2**24  # mask elements packed per step (a multiple of 8): bounds the step's temporaries


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
