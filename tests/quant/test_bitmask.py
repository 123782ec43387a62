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


@pytest.mark.parametrize("numel", [0, 5, 63, 64, 1000])
def test_tested_values_pack_a_slice_at_a_time_as_their_masks_do(numel, monkeypatch):
    """``pack_nonzero`` and ``pack_positive`` of a float tensor (zeros, negatives, -0 and NaN among its
    values) are ``pack_mask`` of ``!= 0`` and ``> 0``, and ``unpacked_parts`` returns the masks a slice at a
    time, with the slices cut where the chunk says."""
    from iexact.quant import bitmask, pack_nonzero, pack_positive, unpacked_parts

    monkeypatch.setattr(bitmask, "SELECT_CHUNK", 16)
    values = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    values[::3] = 0
    values[1::7] = float("nan")
    values[2::11] = -0.0
    for packed, mask in ((pack_nonzero(values), values != 0), (pack_positive(values), values > 0)):
        assert torch.equal(packed, pack_mask(mask))
        parts = list(unpacked_parts(packed, numel))
        assert [part.stop - part.start for part, _ in parts] == [
            min(16, numel - start) for start in range(0, numel, 16)
        ]
        assert torch.equal(torch.cat([bits for _, bits in parts]) if parts else torch.zeros(0, dtype=torch.bool), mask)


@pytest.mark.parametrize("numel", [0, 1, 63, 64, 1000])
@pytest.mark.parametrize("chunk", [16, 2**20])
def test_selected_bits_round_trip_in_their_count_of_bits(numel, chunk, monkeypatch, device):
    from iexact.quant import bitmask, pack_selected, selected_capacity, unpack_selected

    monkeypatch.setattr(bitmask, "SELECT_CHUNK", chunk)
    generator = torch.Generator().manual_seed(numel)
    bits, selected = (torch.rand(2, numel, generator=generator) > 0.5).to(device)
    packed = pack_selected(bits, selected, selected_capacity(numel, 0.5))
    assert torch.equal(unpack_selected(packed, selected), bits & selected)
    # exactly the selected bits, in order: the same bytes as packing bits[selected] alone
    dense = pack_mask(bits[selected])
    assert torch.equal(packed[: dense.numel()], dense) and not packed[dense.numel() :].any()


def test_selected_capacity_is_eight_binomial_deviations_above_the_mean():
    from iexact.quant import selected_capacity

    n = 21_676_544  # a 169,343 x 128 hidden layer of the arxiv-shaped graph
    # n / 2 + ceil(8 sqrt(n / 4)) + 64 = 10,838,272 + 18,624 + 64 bits, 0.09 % above the mean
    assert selected_capacity(n, 0.5) == 10_856_960
    assert selected_capacity(10, 0.5) == 16 and selected_capacity(0, 0.5) == 0  # never above n, rounded to bytes
    assert selected_capacity(1000, 1.0) == 1000


def test_more_selected_than_the_capacity_is_refused():
    from iexact.quant import pack_selected

    with pytest.raises(RuntimeError, match="more elements selected than their packed bits hold"):
        pack_selected(torch.ones(100, dtype=torch.bool), torch.ones(100, dtype=torch.bool), 64)


@pytest.mark.parametrize("offset", [0, 3, 8])
def test_masks_at_any_offset_or_dtype_pack_to_the_same_bytes(offset):
    """A slice of a boolean tensor is packed from its own bytes only where they
    form whole aligned words; elsewhere (and for 0/1 integers) from a copy."""
    generator = torch.Generator().manual_seed(offset)
    mask = (torch.rand(8 + 64, generator=generator) > 0.5)[offset : offset + 64]
    expected = torch.tensor([sum(int(bit) << i for i, bit in enumerate(mask[j : j + 8])) for j in range(0, 64, 8)])
    assert torch.equal(pack_mask(mask), expected.to(torch.uint8))
    assert torch.equal(pack_mask(mask.to(torch.uint8)), expected.to(torch.uint8))
