"""Calibrated levels: fitted per module, never worse on their data, carried beside a state_dict."""

import copy

import pytest
import torch
from torch_geometric.nn.models import GraphSAGE

import iexact
from iexact import CompressionConfig

ROWS, WIDTH, OUT = 400, 32, 8


def _calibrated_sage():
    torch.manual_seed(0)
    model = GraphSAGE(WIDTH, 16, num_layers=2, out_channels=OUT, norm="batch")
    iexact.compress_(model, CompressionConfig(levels="calibrated"))
    return model


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
