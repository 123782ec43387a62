"""The distributions the levels assume, against what a compressed model rounds."""

import pytest
import torch
from torch_geometric.nn.models import GraphSAGE

import iexact
from iexact import CompressionConfig

ROWS, WIDTH, OUT = 400, 32, 8


def _normalized(x, **config):
    from iexact.codec import normalized_values

    config = CompressionConfig(rp_ratio=1, **config)
    return normalized_values(x, config, seed=0) / (2**config.bits - 1)


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
