"""``gradient_error``: the measurement every compression choice is judged by."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.models import GraphSAGE

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed

ROWS, WIDTH, OUT = 400, 32, 8


def _expected_relative_error(projection, x, grad_out):
    r"""E‖Ĝ − G‖² / ‖G‖² of a Linear weight gradient G = dYᵀX with X projected
    4x (k = 8) and rows 8-bit quantized (noise negligible): the shared P gives
    ‖G (PPᵀ − I)‖² = (D − 1)/k ‖G‖²; the row-wise kinds Σ_n ‖dy_n‖² E‖e_n‖²,
    with E‖e_n‖² = (D − 1)/k ‖x_n‖² (per_row) or (D/k − 1) ‖x_n‖² (sketch)."""
    k = WIDTH // 4
    gradient = grad_out.t() @ x
    if projection == "shared":
        return ((WIDTH - 1) / k) ** 0.5
    factor = (WIDTH - 1) / k if projection == "per_row" else WIDTH / k - 1
    row_terms = (grad_out.pow(2).sum(1) * x.pow(2).sum(1)).sum()
    return (factor * row_terms / gradient.pow(2).sum()).sqrt().item()


@pytest.mark.parametrize("projection", ["shared", "per_row", "sketch"])
def test_linear_weight_error_matches_its_formula(projection):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, WIDTH, generator=generator) + torch.randn(WIDTH, generator=generator)
    grad_out = torch.randn(ROWS, OUT, generator=generator) + 0.5
    layer = torch.nn.Linear(WIDTH, OUT, bias=False)
    config = CompressionConfig(bits=8, block_size=64, rp_ratio=4, projection=projection, reference_inputs=False)
    error = iexact.gradient_error(layer, x, loss_fn=lambda out: (out * grad_out).sum(), config=config, draws=64)
    expected = _expected_relative_error(projection, x, grad_out)
    assert error.whole == pytest.approx(expected, rel=0.15)
    assert list(error.per_parameter) == ["weight"] and error.per_parameter["weight"] == error.whole


def _sage_and_data(nodes=300, hidden=32):
    from iexact.experiments.data import load_dataset

    data = load_dataset(f"synthetic:{nodes},{5 * nodes},16,4", seed=0)
    torch.manual_seed(0)
    model = GraphSAGE(16, hidden, num_layers=3, out_channels=4, norm="batch", dropout=0.5)
    return model, data.x, data.edge_index, lambda out: F.cross_entropy(out, data.y)


def test_default_beats_the_shared_projection_on_a_graph():
    model, x, edge_index, loss = _sage_and_data(nodes=2000, hidden=64)
    errors = {
        name: iexact.gradient_error(model, x, edge_index, loss_fn=loss, config=config, draws=16)
        for name, config in (
            ("default", CompressionConfig()),
            ("exact", CompressionConfig.exact()),
            ("shared", CompressionConfig(projection="shared")),
        )
    }
    assert errors["default"].whole < 0.5 * errors["shared"].whole
    assert errors["default"].whole < 0.5 * errors["exact"].whole
    # unbiased: the mean of 16 draws is about 4x closer than one draw
    assert errors["default"].of_mean < 0.4 * errors["default"].whole


def test_model_mode_and_global_generator_are_left_alone():
    model, x, edge_index, loss = _sage_and_data()
    model.eval()
    before = copy.deepcopy(model.state_dict())
    state = torch.get_rng_state()
    iexact.gradient_error(model, x, edge_index, loss_fn=loss, config=CompressionConfig(), draws=2)
    assert not model.training and torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_a_compressed_model_is_measured_against_its_own_fp32_form():
    model, x, edge_index, loss = _sage_and_data()
    fresh = iexact.gradient_error(model, x, edge_index, loss_fn=loss, config=CompressionConfig(bits=8), draws=2)
    iexact.compress_(model, CompressionConfig(bits=1))
    again = iexact.gradient_error(model, x, edge_index, loss_fn=loss, config=CompressionConfig(bits=8), draws=2)
    assert is_compressed(model.convs[0]) and again.whole == pytest.approx(fresh.whole)
    with pytest.raises(ValueError, match="draws must be >= 1"):
        iexact.gradient_error(model, x, edge_index, loss_fn=loss, config=CompressionConfig(), draws=0)


def _normalized(x, **config):
    from iexact.codec import normalized_values

    config = CompressionConfig(rp_ratio=1, **config)
    return normalized_values(x, config, seed=0) / (2**config.bits - 1)


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


def test_clipped_normal_beats_uniform_on_gaussian_blocks_and_not_on_uniform_data():
    from iexact.analysis import distribution_fits

    generator = torch.Generator().manual_seed(0)
    gaussian = distribution_fits(_normalized(torch.randn(2000, 64, generator=generator)), 2, 256)
    assert gaussian["clipped_normal"].ks < gaussian["uniform"].ks / 5
    assert gaussian["clipped_normal"].wasserstein < gaussian["uniform"].wasserstein / 5
    flat = distribution_fits(_normalized(torch.rand(2000, 64, generator=generator)), 2, 256)
    assert flat["uniform"].ks < flat["clipped_normal"].ks / 5
    assert flat["uniform"].wasserstein < flat["clipped_normal"].wasserstein / 5


def test_rounding_variance_against_its_closed_forms():
    from iexact.analysis import rounding_variance
    from iexact.quant.levels import expected_variance, levels_for

    generator = torch.Generator().manual_seed(0)
    uniform_u = torch.rand(200_000, generator=generator, dtype=torch.float64) * 3
    assert rounding_variance(uniform_u, levels_for("uniform", 2, 256)) == pytest.approx(1 / 6, rel=0.01)
    gaussian_u = _normalized(torch.randn(4000, 64, generator=generator)) * 3
    for kind in ("uniform", "optimal"):
        levels = levels_for(kind, 2, 256)
        assert rounding_variance(gaussian_u, levels) == pytest.approx(expected_variance(levels, 2, 256), rel=0.05)


def test_analyze_activations_sees_every_compressed_tensor_and_leaves_the_model_alone():
    from iexact.analysis import DISTRIBUTIONS, analyze_activations
    from iexact.memory import activation_memory

    torch.manual_seed(0)
    model = GraphSAGE(WIDTH, 16, num_layers=2, out_channels=OUT, norm="batch")
    iexact.compress_(model, CompressionConfig())
    x = torch.randn(ROWS, WIDTH)
    edge_index = torch.randint(0, ROWS, (2, 1600))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    analyses = analyze_activations(model, x, edge_index)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    report = activation_memory(model, x, edge_index)
    compressed_layers = {layer.name for layer in report.layers if layer.compressed}
    # conv 0's input is data.x, kept by reference; ReLUs keep 1-bit masks: neither is rounded
    assert [a.layer for a in analyses] == ["norms.0.module", "convs.1"]
    assert {a.layer for a in analyses} <= compressed_layers
    for a in analyses:
        assert set(a.fits) == set(DISTRIBUTIONS) and 0 <= a.sample.min() and a.sample.max() <= 1
        assert a.variance["optimal"]["model"] < a.variance["uniform"]["model"]


def _calibrated_sage():
    torch.manual_seed(0)
    model = GraphSAGE(WIDTH, 16, num_layers=2, out_channels=OUT, norm="batch")
    iexact.compress_(model, CompressionConfig(levels="calibrated"))
    return model


def test_calibrate_fits_each_module_and_leaves_everything_else_alone():
    from iexact.analysis import rounding_variance
    from iexact.quant.levels import optimal_levels

    model = _calibrated_sage()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, WIDTH, generator=generator)
    edge_index = torch.randint(0, ROWS, (2, 1600), generator=generator)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    fitted = iexact.calibrate_(model, x, edge_index)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert set(fitted) == {"norms.0.module", "convs.1"}  # the modules that round something
    modules = dict(model.named_modules())
    for name, levels in fitted.items():
        assert modules[name].iexact_config.levels == levels and levels != model.convs[0].iexact_config.levels
    assert model.convs[0].iexact_config.levels == "calibrated"  # its input is x, kept by reference
    for name, levels in fitted.items():  # on the data they were fitted to (the same forward: same noise)
        u = normalized_values_of(model, name, x, edge_index)
        assert rounding_variance(u, levels) <= rounding_variance(u, optimal_levels(2, 256)) + 1e-9


def normalized_values_of(model, layer, x, edge_index):
    """The normalized values the named module compresses in one training forward."""
    from iexact.analysis import observe_compressions
    from iexact.codec import normalized_values

    values = []
    module = dict(model.named_modules())[layer]

    def record(owners, tensor, seed, config, stored):
        if owners and owners[-1] is module:
            values.append(normalized_values(tensor, config, seed))

    observe_compressions(model, (x, edge_index), {}, record)
    return torch.cat(values)


def test_calibration_state_round_trips_into_a_fresh_model():
    model = _calibrated_sage()
    iexact.calibrate_(model, torch.randn(ROWS, WIDTH), torch.randint(0, ROWS, (2, 1600)))
    state = iexact.calibration_state(model)
    fresh = iexact.load_calibration_state_(_calibrated_sage(), state)
    assert iexact.calibration_state(fresh) == state
    with pytest.raises(ValueError, match="'lin'.*no compressed module"):
        iexact.load_calibration_state_(_calibrated_sage(), {"lin": [0.0, 1.0, 2.0, 3.0]})
    restored = copy.deepcopy(model)  # pickling keeps the levels too
    assert iexact.calibration_state(restored) == state
