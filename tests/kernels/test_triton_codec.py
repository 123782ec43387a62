"""The fused compress, decompress and weight-gradient product (interpreted on
CPU) against the PyTorch path: bit for bit with the noise given, within float
rounding where a matrix product sums in another order; and what each one
launches and moves."""

import dataclasses
import math

import pytest
import torch

import iexact
from iexact import codec
from iexact.quant import levels_for, reference, rounding
from iexact.quant.projection import Projection

from .conftest import Traffic

triton_codec = pytest.importorskip("iexact.kernels.triton_codec")

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="compares with the PyTorch path on CPU tensors")

ASYMMETRIC = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.5, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0)


def _reference(x, config, seed, noise):
    """Codes, mins and steps of the PyTorch path with the noise given."""
    k, block_size, _, _ = codec.stored_sizes(x.shape, config)
    rows = x.reshape(-1, x.shape[-1])
    if k is None:
        z = rows.float().reshape(-1).clone()
    else:
        z = Projection(config.projection, x.shape[-1], k, seed, x.device).forward(rows, 0).reshape(-1)
    low, step = rounding.stored_scales(*reference.block_min_max(z, block_size), config.scale_dtype)
    levels = levels_for(config.levels, config.bits, block_size)
    return reference.quantize_pack(z, low, step, block_size, config.bits, levels, noise=noise), low, step


def _fused(x, config, seed, noise, split=None):
    """Codes, mins and steps of the fused kernel, in one launch or two (rows cut at ``split``)."""
    width = x.shape[-1]
    k, block_size, code_bytes, blocks = codec.stored_sizes(x.shape, config)
    stored_width = k or width
    codes = torch.empty(code_bytes, dtype=torch.uint8)
    mins = torch.empty(blocks, dtype=config.scale_dtype)
    steps = torch.empty(blocks, dtype=config.scale_dtype)
    rows = x.reshape(-1, width)
    cuts = [0, split, rows.shape[0]] if split else [0, rows.shape[0]]
    for first, last in zip(cuts, cuts[1:], strict=False):
        start, end = first * stored_width, last * stored_width
        triton_codec.compress_rows(
            rows[first:last],
            (
                codes[start * config.bits // 8 : end * config.bits // 8],
                mins[start // block_size : -(-end // block_size)],
                steps[start // block_size : -(-end // block_size)],
            ),
            stored_width=stored_width,
            kind=config.projection if k else None,
            block_size=block_size,
            bits=config.bits,
            levels=levels_for(config.levels, config.bits, block_size),
            seed=seed,
            first_row=first,
            offset=start,
            noise=noise[start:end],
        )
    return codes, mins, steps


CASES = [
    ((300, 128), iexact.CompressionConfig()),
    ((77, 50), iexact.CompressionConfig(block_size=64)),  # k = 13: buckets of 3 and 4, tail block
    ((40, 200), iexact.CompressionConfig(rp_ratio=8, bits=4, scale_dtype="float16")),
    ((100, 48), iexact.CompressionConfig(rp_ratio=1, bits=4, block_size=40)),
    ((100, 48), iexact.CompressionConfig(rp_ratio=1, bits=8, levels="uniform", scale_dtype="float32")),
    ((64, 40), iexact.CompressionConfig(bits=1, block_size=16)),
    ((64, 40), iexact.CompressionConfig(rp_ratio=1, bits=4, levels=ASYMMETRIC)),  # binary search
]


@pytest.mark.parametrize("shape, config", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_the_fused_compress_is_the_pytorch_path_bit_for_bit_with_the_noise_given(shape, config, dtype):
    generator = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(*shape, generator=generator) * 3).to(dtype)
    x[0, :8] = 0.5  # a constant run: a zero step where a block holds only these
    k = codec.stored_sizes(x.shape, config)[0]
    noise = torch.rand(shape[0] * (k or shape[1]), generator=generator)
    expected = _reference(x, config, 5, noise)
    for got, want in zip(_fused(x, config, 5, noise), expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)
    # rows cut in two launches where the codec cuts (whole blocks and bytes): signs follow the absolute row
    stored_width = k or shape[1]
    unit = math.lcm(stored_width, config.block_size, 8) // stored_width
    if shape[0] // 2 >= unit:
        for got, want in zip(_fused(x, config, 5, noise, split=shape[0] // 2 // unit * unit), expected, strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("shape, config", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_the_fused_decompress_is_the_pytorch_path_bit_for_bit(shape, config, dtype, launches, monkeypatch):
    x = (torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    packed = codec.compress(x, config, seed=9)
    expected = codec.decompress(packed)
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    restored = codec.decompress(packed)
    assert launches["_decompress_kernel"] == 1 and restored.dtype == dtype
    assert torch.equal(restored, expected)


def test_a_block_holding_nan_or_inf_gets_a_non_finite_step(launches):
    x = torch.randn(64, 32)
    x[3, 5] = float("nan")
    x[40, 1] = float("inf")
    config = iexact.CompressionConfig(check_finite=False, rp_ratio=1, block_size=64)
    packed = codec.compress(x, config, seed=0)
    assert launches["_compress_kernel"] == 1
    assert torch.isfinite(packed.steps).tolist() == [i not in (1, 20) for i in range(32)]
    with pytest.raises(codec.NonFiniteError, match="holds NaN or Inf"):
        codec.compress(x, dataclasses.replace(config, check_finite=True), seed=0)


CENTER = ["mean.dim", "nan_to_num_.default"]  # iexact.codec.column_center: 64 of the rows read


def _floor_and_traffic(x, config, monkeypatch):
    """Bytes the floor allows and bytes moved, for one compress and one decompress."""
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    codec.decompress(codec.compress(x, config, seed=1), check=False)  # tables made once per device
    traffic = Traffic(monkeypatch)
    with traffic:
        packed = codec.compress(x, config, seed=2, check=False)
    compressed = (traffic.bytes, traffic.launched)
    stored = sum(held.nbytes for held in packed.tensors()[:4])  # codes, scales and the center
    traffic.reset()
    with traffic:
        out = codec.decompress(packed, check=False)
    return (x.nbytes + stored, compressed), (stored + out.nbytes, (traffic.bytes, traffic.launched))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_launch_and_the_floors_traffic_for_the_default(dtype, monkeypatch):
    """The default (sketch, INT2, blocks of 128) on a 1,024 x 128 activation:
    the center from 64 rows (two small launches), then one launch each way,
    within 1.3x the floor (read the input and write codes, scales and center;
    read them and write the output)."""
    x = torch.randn(1024, 128).to(dtype)
    (floor, (moved, launched)), (back_floor, (back_moved, back_launched)) = _floor_and_traffic(
        x, iexact.CompressionConfig(), monkeypatch
    )
    assert launched == [*CENTER, "_compress_kernel"] and back_launched == ["_decompress_kernel"]
    assert moved <= 1.3 * floor and back_moved <= 1.3 * back_floor


DENSE = [
    iexact.CompressionConfig(projection="shared"),
    iexact.CompressionConfig(projection="per_row", bits=4, block_size=64),
    iexact.CompressionConfig.exact(),  # one block per projected row
]


@pytest.mark.parametrize("config", DENSE)
def test_the_dense_kinds_project_in_the_kernel_as_the_pytorch_path_does(config, launches, monkeypatch):
    """The matrix product in the kernel is the PyTorch path's up to float
    rounding (another order of sums): with the noise given, all but a few
    codes equal and the scales within 1e-5; decompressed, within 1e-5."""
    x = torch.randn(96, 128, generator=torch.Generator().manual_seed(3))
    k = codec.stored_sizes(x.shape, config)[0]
    noise = torch.rand(96 * k, generator=torch.Generator().manual_seed(4))
    codes, mins, steps = _fused(x, config, 5, noise)
    expected = _reference(x, config, 5, noise)
    assert launches["_compress_dense_kernel"] == 1
    assert (codes != expected[0]).float().mean() < 0.01
    torch.testing.assert_close(mins.float(), expected[1].float(), rtol=1e-2, atol=1e-5)
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    packed = codec.compress(x, config, seed=9)
    reference = codec.decompress(packed)
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    torch.testing.assert_close(codec.decompress(packed), reference, rtol=1e-5, atol=1e-5)
    assert launches["_decompress_dense_kernel"] == 1


def test_the_shared_kind_moves_its_floor_in_one_launch_each_way(monkeypatch):
    """The shared projection multiplied in the kernels: within 1.2x the floor."""
    x = torch.randn(1024, 128)
    config = iexact.CompressionConfig(projection="shared")
    (floor, (moved, launched)), (back_floor, (back_moved, back_launched)) = _floor_and_traffic(x, config, monkeypatch)
    assert launched == [*CENTER, "_compress_dense_kernel"] and back_launched == ["_decompress_dense_kernel"]
    assert moved <= 1.2 * floor and back_moved <= 1.2 * back_floor


@pytest.mark.parametrize("shape, config", CASES[:3] + [((300, 128), config) for config in DENSE])
def test_the_fused_transpose_product_decodes_inside_the_product(shape, config, monkeypatch):
    r""":math:`A^\top \hat H` (a weight gradient) with :math:`\hat H` decoded
    inside the product: the PyTorch path's within float rounding (sums in
    another order), in one product launch and the sum of its chunks, moving
    the left factor, the codes and the result, never :math:`\hat H` (the
    dense kinds then multiply by :math:`P^\top`, made from the seed)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3
    left = torch.randn(shape[0], 24, generator=torch.Generator().manual_seed(2))
    monkeypatch.setenv("IEXACT_KERNELS", "torch")
    packed = codec.compress(x, config, seed=9)
    expected = codec.transpose_products(packed, left)[0]
    monkeypatch.setenv("IEXACT_KERNELS", "triton")
    codec.transpose_products(packed, left)  # tables made once per device
    traffic = Traffic(monkeypatch)
    with traffic:
        product = codec.transpose_products(packed, left)[0]
    torch.testing.assert_close(product, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    # the shared kind also builds P (D x k); per_row's signs follow P^T, so it restores H (one decompress)
    restored = "_decompress_dense_kernel" if config.projection == "per_row" else "_transpose_products_kernel"
    assert traffic.launched.count(restored) == 1
    if config.projection == "sketch" or codec.stored_sizes(x.shape, config)[0] is None:
        # the kernel reads A and the codes and writes one partial product per chunk of rows, which the sum reads
        stored = packed.codes.nbytes + packed.mins.nbytes + packed.steps.nbytes
        chunks = -(-shape[0] // triton_codec._PRODUCT_ROWS)
        assert traffic.launched == ["_transpose_products_kernel", "sum.dim_IntList"]
        assert traffic.bytes <= 1.05 * (left.nbytes + stored + (2 * chunks + 1) * product.nbytes)


@pytest.mark.parametrize("projection", ["sketch", "shared"])
def test_a_strided_input_is_read_where_it_lies(projection, launches):
    """The fused kernels read a column slice in place (its row stride) and a
    transposed or column-strided tensor from its contiguous copy: the codes
    and scales of the contiguous tensor either way, drawn noise included."""
    config = iexact.CompressionConfig(projection=projection)
    base = torch.randn(96, 260, generator=torch.Generator().manual_seed(0))
    for x in (base[:, :128], base[:, ::2], torch.randn(128, 64, generator=torch.Generator().manual_seed(1)).t()):
        strided, copied = codec.compress(x, config, seed=4), codec.compress(x.contiguous(), config, seed=4)
        for held, expected in zip(strided.tensors(), copied.tensors(), strict=True):
            assert torch.equal(held, expected)
    assert launches["compress"] == 6
