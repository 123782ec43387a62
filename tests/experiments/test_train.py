"""The training loop: divergence stops a run with one line."""

import pytest
import torch

from iexact.experiments.checkpoint import read_record
from iexact.experiments.cli import main

TINY = ["--dataset", "synthetic:300,1200,16,4", "--epochs", "3", "--quiet", "--hidden", "16"]


@pytest.mark.parametrize("config", ["default", "fp32"])
def test_divergence_stops_the_run_with_one_line(config, tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    assert (
        main(
            ["train"]
            + TINY
            + [
                "--epochs",
                "20",
                "--lr",
                "1e30",
                "--config",
                config,
                "--checkpoint",
                str(checkpoint),
                "--save-every",
                "1",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "run 1 diverged in epoch" in error[0] and "learning rate too high" in error[0]
    if checkpoint.exists():  # the last state saved is a finite one
        assert "keeps the last state saved" in error[0]
        state = read_record(checkpoint)["model"]
        assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())
