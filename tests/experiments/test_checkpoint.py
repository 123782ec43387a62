"""Checkpoints: refused when damaged (the field named) or when a resume would drop results."""

import json

import pytest
import torch

from iexact.experiments.checkpoint import CheckpointError, load_checkpoint, read_record, write_record
from iexact.experiments.cli import main
from iexact.experiments.settings import Settings

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
        (lambda c: c["state"].update(epoch=-5), "field 'state.epoch' is not an integer >= 0"),
        (lambda c: c["state"].update(epoch=5), "field 'state.epoch_seconds' is out of range"),
        (
            lambda c: c["state"].update(val_history=None),
            "field 'state.val_history' is out of range or of the wrong type",
        ),
        (lambda c: c["state"].update(best_val=7.5), "field 'state.best_val' is out of range"),
        (lambda c: c["state"].update(test_at_best=-0.1), "field 'state.test_at_best' is out of range"),
        (lambda c: c.update(scaler={"scale": -1.0, "_growth_tracker": 0}), "its field 'scaler' is no GradScaler"),
        (lambda c: c.update(scaler=[]), "its field 'scaler' is no GradScaler"),
    ],
)
def test_a_damaged_checkpoint_names_the_field(forge, message, tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    common = ["train"] + TINY + ["--checkpoint", str(checkpoint)]
    assert main(common + ["--save-every", "1", "--epochs", "2"]) == 0
    record = read_record(checkpoint)
    forge(record)
    write_record(checkpoint, record)  # forged consistently: its digest made anew
    assert main(common + ["--resume"]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize(
    "forge, message",
    [
        (lambda run: run.update(test_accuracy=7.5), "finished run 1 has no valid field 'test_accuracy'"),
        (lambda run: run.update(epochs=0), "finished run 1 has no valid field 'epochs'"),
        (lambda run: run.update(best_epoch=2), "finished run 1 has no valid field 'best_epoch'"),
        (lambda run: run.update(val_history=[0.5]), "finished run 1 has no valid field 'val_history' (for 2 epochs)"),
        (lambda run: run.update(epoch_seconds=[0.1, -1.0]), "finished run 1 has no valid field 'epoch_seconds'"),
        (lambda run: run.update(run=3), "finished run 1 has no valid field 'run'"),
    ],
)
def test_a_finished_run_out_of_range_is_named(forge, message, tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    common = ["train"] + TINY + ["--epochs", "2", "--runs", "2", "--checkpoint", str(checkpoint)]
    assert main(common) == 0
    record = read_record(checkpoint)
    forge(record["finished"][0])
    write_record(checkpoint, record)
    assert main(common + ["--resume"]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One checkpoint of a 2-epoch run, written once for the tests of damaged files."""
    checkpoint = tmp_path_factory.mktemp("saved") / "c.pt"
    assert main(["train"] + TINY + ["--epochs", "2", "--checkpoint", str(checkpoint)]) == 0
    return checkpoint


def test_any_byte_flipped_is_refused_as_damage(saved, tmp_path):
    """60 random positions of the file, header and torch payload alike: each
    flip is named as damage before anything of the file is used."""
    data = saved.read_bytes()
    positions = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:60].tolist()
    settings = Settings.from_dict(read_record(saved)["settings"])
    damaged = tmp_path / "damaged.pt"
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="is damaged|is not an iexact checkpoint|format version") as info:
            load_checkpoint(damaged, settings)
        assert "weights_only" not in str(info.value), position


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda data: data[: len(data) // 2], "does not match the digest"),
        (lambda data: data.split(b"\n", 1)[1], "its header line does not match its content"),
        (lambda data: b"iexact-checkpoint 99 sha256 00\n" + data.split(b"\n", 1)[1], "version 99, this iexact reads"),
        (lambda data: b"not a checkpoint at all", "is damaged or not an iexact checkpoint"),
        (lambda data: b"iexact-checkpoint six\n", "its header line is malformed"),
    ],
    ids=["truncated", "no header", "newer", "text", "bad header"],
)
def test_damaged_or_foreign_files_are_named_without_torchs_advice(saved, tmp_path, content, message):
    path = tmp_path / "c.pt"
    path.write_bytes(content(saved.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        read_record(path)
    assert "weights_only" not in str(info.value)


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(3)}, path)
    with pytest.raises(CheckpointError, match="is not an iexact checkpoint"):
        read_record(path)


def test_a_missing_checkpoint_is_named_for_any_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint .* does not exist$"):
        read_record(tmp_path / "nope.pt")
