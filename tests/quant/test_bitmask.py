"""1-bit masks: packed and unpacked exactly, chunk by chunk as whole."""

import pytest
import torch

from iexact.quant import pack_mask, unpack_mask


@pytest.mark.parametrize("shape", [(1,), (7, 3), (4, 5, 9)])
def test_mask_round_trip(shape, device):
    mask = torch.rand(shape, device=device) > 0.4
    packed = pack_mask(mask)
    assert packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_mask(packed, mask.shape), mask)


def test_masks_packed_chunk_by_chunk_are_the_same_bytes(monkeypatch):
    from iexact.quant import bitmask

    mask = torch.rand(7, 9, generator=torch.Generator().manual_seed(0)) > 0.5
    whole = pack_mask(mask)
    monkeypatch.setattr(bitmask, "MASK_CHUNK", 16)  # 63 elements: three whole chunks and one of 15
    assert torch.equal(pack_mask(mask), whole)
    assert torch.equal(unpack_mask(whole, mask.shape), mask)
