import dataclasses
import math

import pytest
import torch

import iexact
from iexact import CompressionConfig, PackedActivation, compress, decompress
from iexact.config import ALLOWED_PROJECTIONS as PROJECTIONS
from iexact.quant.projection import Projection, projected_width


def _mean_and_standard_error(x, config, draws, device):
    """Mean of the estimates over ``draws`` seeds and its standard error; the
    sums taken about the first draw, so an element that never moved has a
    standard error of exactly 0 (not the cancellation of two large sums)."""
    first = decompress(compress(x, config, seed=0)).double()
    total = torch.zeros(x.shape, dtype=torch.float64, device=device)
    squares = torch.zeros_like(total)
    for seed in range(1, draws):
        shifted = decompress(compress(x, config, seed=seed)).double() - first
        total += shifted
        squares += shifted**2
    shift = total / draws
    variance = (squares / draws - shift**2).clamp(min=0) * draws / (draws - 1)
    return first + shift, (variance / draws).sqrt()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("levels", ["uniform", "optimal"])
@pytest.mark.parametrize("rp_ratio", [1, 4])
def test_unbiased_over_many_draws(bits, levels, rp_ratio, device):
    torch.manual_seed(0)
    x = torch.randn(8, 12, device=device) + 0.5
    config = CompressionConfig(bits=bits, block_size=20, rp_ratio=rp_ratio, levels=levels, projection="shared")
    mean, standard_error = _mean_and_standard_error(x, config, 1000, device)
    _assert_within_four_standard_errors(mean, standard_error, x, 1000)


@pytest.mark.parametrize(
    "bits, levels", [(2, (0.0, 0.7, 1.4, 3.0)), (4, tuple(15 * (i / 15) ** 1.5 for i in range(16)))]
)
def test_asymmetric_levels_stay_unbiased(bits, levels, device):
    """Calibrated (asymmetric) levels round by binary search, unbiased like the others."""
    torch.manual_seed(0)
    x = torch.randn(8, 12, device=device) + 0.5
    config = CompressionConfig(bits=bits, block_size=20, rp_ratio=1, levels=levels)
    mean, standard_error = _mean_and_standard_error(x, config, 1000, device)
    _assert_within_four_standard_errors(mean, standard_error, x, 1000)


def _assert_within_four_standard_errors(mean, standard_error, x, draws):
    error = (mean - x.double()).abs()
    # an element that never changed over the draws sits within ~1/draws of a
    # level (block extremes): its rare other outcome was not observed
    frozen = standard_error == 0
    assert torch.all(error[frozen] <= 10 * (x.max() - x.min()).double() / draws)
    assert torch.all(error[~frozen] <= 4 * standard_error[~frozen])
    # and all elements together: a small bias shared by many elements shows here
    z_scores = (mean - x.double())[~frozen] / standard_error[~frozen]
    assert abs(z_scores.sum().item()) <= 4 * z_scores.numel() ** 0.5


def test_unbiased_where_scale_rounding_would_bias():
    # a narrow block far from 0: bf16 rounds its min by ~100x its range, so
    # rounding to nearest instead of outward would push values off [0, B]
    torch.manual_seed(1)
    x = 1.00390625 + 1e-4 * torch.rand(8, 16)
    config = CompressionConfig(bits=2, block_size=16, rp_ratio=1, levels="optimal")
    mean, standard_error = _mean_and_standard_error(x, config, 1000, "cpu")
    _assert_within_four_standard_errors(mean, standard_error, x, 1000)


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("bits", [2, 8])
def test_every_projection_is_unbiased(projection, bits):
    """Over 1,000 seeds, with quantization noise (INT2) and nearly without (8 bits)."""
    torch.manual_seed(4)
    x = torch.randn(6, 24) + 0.3
    config = CompressionConfig(bits=bits, block_size=16, rp_ratio=4, projection=projection)
    mean, standard_error = _mean_and_standard_error(x, config, 1000, "cpu")
    _assert_within_four_standard_errors(mean, standard_error, x, 1000)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_centered_tensors_are_unbiased(projection):
    """A projected tensor of 64 rows or more is stored centered
    (iexact.codec.centered): the same unbiasedness over 1,000 seeds, on rows
    far from zero-mean. (Float32 scales: a bfloat16 minimum rounded outward
    leaves each block's least element a rounding up once in hundreds of
    draws, whose observed count is too skewed for a test by standard errors;
    the bfloat16 case has its own test above.)"""
    torch.manual_seed(5)
    x = torch.relu(torch.randn(64, 8)) + torch.linspace(0, 3, 8)
    config = CompressionConfig(block_size=16, rp_ratio=4, projection=projection, scale_dtype="float32")
    assert compress(x, config, seed=0).center is not None
    mean, standard_error = _mean_and_standard_error(x, config, 1000, "cpu")
    _assert_within_four_standard_errors(mean, standard_error, x, 1000)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_a_common_offset_of_the_columns_adds_no_noise(projection):
    """The center (the mean of sampled rows, stored exactly) takes a column
    offset out of what is projected and rounded: adding 20 + d to column d
    leaves the error as it was (uncentered, the projection's error would grow
    with the offset's norm, about 30 times here)."""
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(6))
    offset = 20 + torch.arange(32.0)
    config = CompressionConfig(projection=projection)

    def error(rows, config=config):
        return sum((decompress(compress(rows, config, seed=s)) - rows).square().sum() for s in range(20)) / 20

    packed = compress(x + offset, config, seed=0)
    torch.testing.assert_close(packed.center, (x + offset)[::4].mean(0))  # 64 of the 256 rows
    assert error(x + offset) <= 1.2 * error(x)
    assert error(x + offset, dataclasses.replace(config, center=False)) > 10 * error(x)


def test_an_unprojected_tensor_is_not_centered_so_relu_zeros_stay_exact():
    """Without a projection a ReLU's zeros are each block's minimum, which
    the rounding keeps exactly; a center would move them off the levels."""
    x = torch.relu(torch.randn(256, 64, generator=torch.Generator().manual_seed(7)))
    packed = compress(x, CompressionConfig(rp_ratio=1), seed=0)
    assert packed.center is None
    assert torch.equal(decompress(packed)[x == 0], torch.zeros(int((x == 0).sum())))


def _projection_variance(x, projection, k):
    """The per-element variance of each kind (module docstring of iexact.quant.projection),
    over the seed: dense kinds (|h|^2 - h_d^2) / k, the sketch (b - 1)/(D - 1) of it."""
    others = (x.double() ** 2).sum(1, keepdim=True) - x.double() ** 2
    width = x.shape[1]
    return others / k if projection != "sketch" else others * (width // k - 1) / (width - 1)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_variance_of_each_projection_matches_its_formula(projection):
    # no quantization noise to speak of at 8 bits
    torch.manual_seed(2)
    x = torch.randn(4, 32)
    config = CompressionConfig(bits=8, block_size=8, rp_ratio=4, projection=projection)
    samples = torch.stack([decompress(compress(x, config, seed=s)).double() for s in range(3000)])
    expected = _projection_variance(x, projection, projected_width(32, 4))
    assert samples.var(0).sum() / expected.sum() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_errors_of_two_rows_are_independent_except_when_shared(projection):
    """Two identical rows: the shared projection makes one error for both
    (correlation 1), the row-wise kinds two unrelated ones."""
    row = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))
    x = row.repeat(2, 1)
    config = CompressionConfig(bits=8, block_size=8, rp_ratio=4, projection=projection)
    errors = torch.stack([decompress(compress(x, config, seed=s)) - x for s in range(1000)]).double()
    first, second = errors[:, 0].flatten(), errors[:, 1].flatten()
    correlation = torch.corrcoef(torch.stack([first, second]))[0, 1].item()
    if projection == "shared":
        assert correlation > 0.99
    else:
        assert abs(correlation) < 4 / (errors.shape[0] * 32) ** 0.5  # 4 standard errors of zero


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_projections_do_not_depend_on_the_chunking(projection):
    """Rows carry their own signs: projecting 10 rows at a time gives the whole tensor's result
    (up to the last bits of a BLAS product, whose blocking depends on the row count)."""
    x = torch.randn(300, 40, generator=torch.Generator().manual_seed(0))
    project = Projection(projection, 40, 10, seed=9, device=torch.device("cpu"))
    whole = project.forward(x, 0)
    parts = torch.cat([project.forward(x[first : first + 10], first) for first in range(0, 300, 10)])
    torch.testing.assert_close(parts, whole, rtol=1e-6, atol=1e-6)
    restored = torch.cat([project.inverse(whole[first : first + 10], first) for first in range(0, 300, 10)])
    torch.testing.assert_close(restored, project.inverse(whole, 0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape, config",
    [
        ((169, 128), CompressionConfig.iexact()),
        ((169, 128), CompressionConfig.exact()),
        ((1000, 33), CompressionConfig(bits=1, block_size=100, rp_ratio=1)),
        ((7, 5, 9), CompressionConfig(bits=4, block_size=13, rp_ratio=2, scale_dtype=torch.float32)),
        ((1,), CompressionConfig(bits=8)),
    ],
)
def test_nbytes_is_the_exact_byte_count(shape, config, device):
    x = torch.randn(shape, device=device)
    packed = compress(x, config, seed=0)
    width = shape[-1]
    k = projected_width(width, config.rp_ratio) or width
    numel = math.prod(shape[:-1]) * k
    block = config.block_elements(k)
    scale_bytes = torch.empty(0, dtype=config.scale_dtype).element_size()
    seed_bytes = 8 if packed.projected_width else 0
    center_bytes = 4 * width if config.center and packed.projected_width and math.prod(shape[:-1]) >= 64 else 0
    expected = math.ceil(numel * config.bits / 8) + 2 * math.ceil(numel / block) * scale_bytes
    assert packed.nbytes == expected + center_bytes + seed_bytes
    assert (packed.center is not None) == (center_bytes > 0)
    # nothing else is held: codes are uint8, scales in the scale dtype, one pair per block
    assert packed.codes.dtype == torch.uint8 and packed.codes.numel() == math.ceil(numel * config.bits / 8)
    assert packed.mins.dtype == packed.steps.dtype == config.scale_dtype
    assert packed.mins.numel() == packed.steps.numel() == math.ceil(numel / block)


def test_tail_block_is_quantized_not_kept():
    x = torch.randn(1, 1000)
    packed = compress(x, CompressionConfig(bits=2, block_size=64, rp_ratio=1), seed=0)
    tail = decompress(packed)[0, 960:]  # the 40-element tail block
    assert tail.unique().numel() <= 4
    assert not torch.equal(tail, x[0, 960:])


@pytest.mark.parametrize("scale_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("value", [0.0, 0.5, -3.0, 1024.0])
def test_constant_blocks_round_trip_exactly(scale_dtype, value, device):
    x = torch.full((40, 8), value, device=device)
    config = CompressionConfig(bits=2, block_size=16, rp_ratio=1, scale_dtype=scale_dtype)
    assert torch.equal(decompress(compress(x, config)), x)


def test_constant_blocks_of_any_float32_value_are_exact_with_float32_scales():
    x = torch.full((10, 10), 0.1234567)
    config = CompressionConfig(bits=2, block_size=25, rp_ratio=1, scale_dtype=torch.float32)
    assert torch.equal(decompress(compress(x, config)), x)


def test_constant_block_of_unrepresentable_value_stays_within_the_scale_resolution():
    x = torch.full((10, 10), 0.1234567)
    estimate = decompress(compress(x, CompressionConfig(bits=2, block_size=25, rp_ratio=1)))
    assert torch.all((estimate - x).abs() <= 2**-8 * 0.1234567)


def test_one_element():
    x = torch.tensor([[3.25]])
    assert torch.equal(decompress(compress(x, CompressionConfig(rp_ratio=1))), x)
    assert decompress(compress(x, CompressionConfig())).shape == (1, 1)


def test_width_below_rp_ratio_projects_to_one_column():
    x = torch.randn(50, 3)
    packed = compress(x, CompressionConfig(rp_ratio=8), seed=0)
    assert packed.projected_width == 1
    assert decompress(packed).shape == x.shape


def test_projection_is_skipped_where_it_would_not_narrow():
    assert projected_width(16, 1) is None
    assert projected_width(2, 1.5) is None
    assert projected_width(128, 8) == 16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_inputs(dtype):
    torch.manual_seed(3)
    x = torch.randn(64, 32).to(dtype)
    config = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
    estimate = decompress(compress(x, config, seed=1))
    assert estimate.dtype == dtype and estimate.shape == x.shape
    mean = torch.stack([decompress(compress(x, config, seed=s)).double() for s in range(200)]).mean(0)
    # the output is rounded to the input dtype: allow one unit in the last place
    tolerance = torch.finfo(dtype).eps * x.double().abs() + 5e-3  # 4 SE at 8 bits, 200 draws
    assert torch.all((mean - x.double()).abs() <= tolerance)


@pytest.mark.parametrize("shape", [(0, 8), (8, 0), (0,)])
def test_empty_tensor(shape):
    x = torch.empty(shape)
    packed = compress(x, CompressionConfig())
    assert packed.nbytes <= 8 and packed.codes.numel() == 0
    assert decompress(packed).shape == x.shape


def test_seeded_compression_is_repeatable_and_seeds_differ():
    x = torch.randn(300, 64)
    config = CompressionConfig()
    first, again = compress(x, config, seed=5), compress(x, config, seed=5)
    assert torch.equal(first.codes, again.codes)
    assert not torch.equal(first.codes, compress(x, config, seed=6).codes)
    torch.manual_seed(9)
    drawn = compress(x, config)
    torch.manual_seed(9)
    assert compress(x, config).seed == drawn.seed


@pytest.mark.parametrize(
    "config",
    [
        CompressionConfig(),
        CompressionConfig(projection="shared"),
        CompressionConfig(projection="per_row"),
        CompressionConfig(rp_ratio=1),
    ],
    ids=["sketch", "shared", "per_row", "unprojected"],
)
def test_a_strided_input_is_stored_as_its_contiguous_copy(config):
    """A transposed, column-sliced or column-strided tensor compresses to the
    very codes and scales of its contiguous copy (the layout is not data)."""
    base = torch.randn(96, 260, generator=torch.Generator().manual_seed(0))
    for x in (base[:, :128], base[:, ::2], torch.randn(128, 64, generator=torch.Generator().manual_seed(1)).t()):
        strided, copied = compress(x, config, seed=4), compress(x.contiguous(), config, seed=4)
        for held, expected in zip(strided.tensors(), copied.tensors(), strict=True):
            assert torch.equal(held, expected)


def test_decompress_into_out():
    x = torch.randn(500, 64)
    packed = compress(x, CompressionConfig(), seed=0)
    out = torch.empty_like(x)
    assert decompress(packed, out=out) is out
    assert torch.equal(out, decompress(packed))
    with pytest.raises(ValueError, match="out must be a contiguous torch.float32 tensor of shape \\(500, 64\\)"):
        decompress(packed, out=torch.empty(64, 500))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("rp_ratio", [1, 8])
def test_nan_and_inf_are_refused(bad, rp_ratio):
    x = torch.randn(100, 64)
    x[17, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        compress(x, CompressionConfig(rp_ratio=rp_ratio))


def test_an_fp16_overflow_is_refused_with_the_grad_scaler_setting_named():
    x = torch.randn(100, 64, dtype=torch.float16)
    x[5, 5] = math.inf
    with pytest.raises(ValueError, match=r"fp16 autocast with a GradScaler, CompressionConfig\(check_finite=False\)"):
        compress(x, CompressionConfig())
    assert decompress(compress(x, CompressionConfig(check_finite=False)), check=False).isnan().any()


def test_non_float_and_bad_arguments():
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        compress(torch.arange(10), CompressionConfig())
    with pytest.raises(TypeError, match="CompressionConfig"):
        compress(torch.randn(4, 4), {"bits": 2})
    with pytest.raises(ValueError, match="seed=-1 is invalid"):
        compress(torch.randn(4, 4), CompressionConfig(), seed=-1)


def _packed_fields(**changes):
    packed = compress(
        torch.randn(50, 16, generator=torch.Generator().manual_seed(0)), CompressionConfig(block_size=64), seed=1
    )
    fields = {field.name: getattr(packed, field.name) for field in dataclasses.fields(packed)}
    return {**fields, **changes}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: {"codes": f["codes"][:-3]}, "codes is invalid: must be 50 uint8 bytes"),
        (lambda f: {"codes": f["codes"].to(torch.int32)}, "codes is invalid"),
        (lambda f: {"mins": f["mins"][:-1]}, "mins is invalid: must hold 4 bfloat16"),
        (lambda f: {"steps": f["steps"].view(2, -1)}, "steps is invalid: must be a 1-D tensor"),
        (lambda f: {"bits": 3}, "bits is invalid: must be one of 1, 2, 4, 8"),
        (lambda f: {"block_size": 0}, "block_size is invalid"),
        (lambda f: {"levels": (0.0, 1.0, 3.0)}, "levels is invalid: must be 4 increasing values from 0 to 3"),
        (lambda f: {"projected_width": -2}, "projected_width is invalid"),
        (lambda f: {"dtype": torch.int64}, "dtype is invalid"),
        (lambda f: {"center": torch.zeros(3)}, r"center is invalid: must be None or a float32 tensor of shape \(16,\)"),
    ],
)
def test_an_inconsistent_packed_activation_is_refused_on_construction(change, message):
    fields = _packed_fields()
    with pytest.raises(ValueError, match=message):
        PackedActivation(**{**fields, **change(fields)})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", -1.0, "steps are block ranges, never negative"),
        ("steps", float("nan"), "PackedActivation.steps is invalid: it holds NaN or Inf"),
        ("steps", float("inf"), "PackedActivation.steps is invalid: it holds NaN or Inf"),
        ("mins", float("nan"), "PackedActivation.mins is invalid: it holds NaN or Inf"),
        ("mins", float("-inf"), "PackedActivation.mins is invalid: it holds NaN or Inf"),
    ],
)
def test_damaged_scales_are_refused_by_decompress(field, value, message):
    fields = _packed_fields()
    damaged = fields[field].clone()
    damaged[-1] = value
    packed = PackedActivation(**{**fields, field: damaged})
    with pytest.raises(ValueError, match=message):
        decompress(packed)
    assert decompress(packed, check=False).shape == packed.shape  # unchecked: decoded as it is


def test_compress_keeps_no_autograd_graph_and_refuses_non_tensors():
    x = torch.randn(40, 16, requires_grad=True)
    packed = compress(x * 2, CompressionConfig(), seed=0)
    assert not any(t.requires_grad or t.grad_fn is not None for t in (packed.codes, packed.mins, packed.steps))
    torch.testing.assert_close(decompress(packed).mean(), (x * 2).detach().mean(), atol=0.2, rtol=0)
    with pytest.raises(TypeError, match="compress needs a torch.Tensor, got list"):
        compress([[1.0, 2.0]], CompressionConfig())
    numpy = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match="got numpy.ndarray: convert it first"):
        compress(numpy.ones((3, 4), dtype=numpy.float32), CompressionConfig())


def test_normalized_values_are_what_compress_rounds():
    """Decoding the codes of compress lands within one level gap of u, and the
    mean decoded level equals u (over draws)."""
    from iexact.codec import normalized_values

    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    config = CompressionConfig(bits=2, block_size=64, rp_ratio=1, levels="uniform", scale_dtype=torch.float32)
    u = normalized_values(x, config, seed=0)
    assert u.shape == (x.numel(),) and 0 <= u.min() and u.max() <= 3 + 1e-5
    blocks = u.view(-1, 64)
    assert torch.allclose(blocks.min(1).values, torch.zeros(32), atol=1e-5)
    assert torch.allclose(blocks.max(1).values, torch.full((32,), 3.0), atol=1e-4)
    packed = iexact.compress(x, config, seed=0)
    scale = (packed.steps / 3).repeat_interleave(64)
    decoded = (iexact.decompress(packed).view(-1) - packed.mins.repeat_interleave(64)) / scale
    assert ((decoded - u).abs() <= 1 + 1e-4).all()
