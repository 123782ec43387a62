r"""Boolean masks stored at one bit per element (ReLU signs, keep-masks)."""
from __future__ import annotations

import torch

from .reference import pack_codes


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    r"""Pack a boolean tensor, 8 elements per byte, first element in the lowest bit.

    Shapes:
        - **input:** any shape, :math:`n` elements
        - **output:** :math:`(\lceil n / 8 \rceil,)` uint8
    """
    flat = mask.reshape(-1)
    codes = torch.zeros(-(-flat.numel() // 8) * 8, dtype=torch.uint8, device=mask.device)
    codes[: flat.numel()] = flat
    return pack_codes(codes, 1)


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a boolean tensor of ``shape``."""
    numel = shape.numel()
    bits = torch.arange(8, device=packed.device)
    table = ((torch.arange(256, device=packed.device).unsqueeze(1) >> bits) & 1).to(torch.bool)
    return table.index_select(0, packed.to(torch.int32)).view(-1)[:numel].view(shape)
