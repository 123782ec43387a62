"""``--precision``'s step: autocast around the forward, the GradScaler's
steps and state (end to end in ``tests/experiments/test_cli.py``)."""

import pytest
import torch

from iexact.experiments.precision import PRECISIONS, StepPrecision, autocast


def test_each_precision_autocasts_its_forward_to_its_dtype():
    device = torch.device("cpu")
    for name, dtype in PRECISIONS.items():
        with autocast(name, device):
            out = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
        assert out.dtype == (dtype or torch.float32)


def test_an_unknown_precision_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="precision='fp8' is invalid: use one of 32, bf16, fp16"):
        StepPrecision("fp8", torch.device("cpu"))


def test_fp16_skips_an_overflowing_step_and_keeps_its_scale_in_the_state():
    layer = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in layer.parameters()]
    step = StepPrecision("fp16", torch.device("cpu"))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    with step.forward():
        loss = layer(torch.full((2, 3), 1e4)).float().sum() * 1e30  # Inf once scaled
    step.backward_and_step(loss, optimizer, grad_clip=0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    state = step.state_dict()
    assert state["scale"] == 2.0**15  # halved from 2**16
    fresh = StepPrecision("fp16", torch.device("cpu"))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert StepPrecision("bf16", torch.device("cpu")).state_dict() == {}
