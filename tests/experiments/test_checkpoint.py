"""Checkpoints: refused when damaged (the field named) or when a resume would drop results."""

import json

import pytest
import torch

from iexact.experiments.cli import main

TINY = ["--dataset", "synthetic:300,1200,16,4", "--epochs", "3", "--quiet", "--hidden", "16"]


def test_a_resume_that_would_drop_results_is_refused(tmp_path, capsys):
    checkpoint, record = tmp_path / "c.pt", tmp_path / "r.json"
    common = ["train"] + TINY[:2] + ["--quiet", "--hidden", "16", "--checkpoint", str(checkpoint)]
    assert main(common + ["--epochs", "4", "--runs", "2"]) == 0
    assert main(common + ["--epochs", "2", "--runs", "2", "--resume"]) == 1
    assert "holds a run of 4 epochs: --epochs 2 would shorten it" in capsys.readouterr().err
    assert main(common + ["--epochs", "4", "--runs", "1", "--resume"]) == 1
    assert "holds 2 runs (finished or begun): --runs 1 would drop some" in capsys.readouterr().err
    assert main(common + ["--epochs", "6", "--runs", "3", "--resume", "--json", str(record)]) == 0
    saved = json.loads(record.read_text())
    # run 1 had finished; run 2, the checkpoint's current run, continues to 6 epochs; run 3 is new
    assert saved["run_epochs"] == [4, 6, 6] and saved["epochs"] == 6


@pytest.mark.parametrize(
    "forge, message",
    [
        (lambda c: c.pop("state"), "has no field 'state'"),
        (lambda c: c.update(run="1"), "its field 'run' holds str where int belongs"),
        (lambda c: c.update(run=5), "its field 'run' is 5 but it holds 0 finished runs"),
        (lambda c: c.update(seed_streams=[1, 2]), "'seed_streams' holds non-tensors"),
        (lambda c: c["model"].pop(next(iter(c["model"]))), "does not fit the model it was made for"),
        (lambda c: c["state"].update(bogus=1), "does not fit the model it was made for"),
    ],
)
def test_a_damaged_checkpoint_names_the_field(forge, message, tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    common = ["train"] + TINY + ["--checkpoint", str(checkpoint)]
    assert main(common + ["--save-every", "1", "--epochs", "2"]) == 0
    record = torch.load(checkpoint, weights_only=True)
    forge(record)
    torch.save(record, checkpoint)
    assert main(common + ["--resume"]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
