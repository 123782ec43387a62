"""``iexact train`` / ``bench`` / ``datasets`` end to end, checkpoints and errors."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from iexact.experiments.checkpoint import CheckpointError, load_checkpoint, read_record
from iexact.experiments.cli import main
from iexact.experiments.data import load_dataset
from iexact.experiments.settings import Settings

TINY = ["--dataset", "synthetic:300,1200,16,4", "--epochs", "4", "--quiet", "--hidden", "16"]
RECORD_KEYS = {
    "iexact",
    "torch",
    "device",
    "threads",
    "gradient_error",
    "dataset",
    "model",
    "kind",
    "label",
    "config",
    "layers",
    "hidden",
    "dropout",
    "lr",
    "weight_decay",
    "grad_clip",
    "precision",
    "seed",
    "epochs",
    "runs",
    "test_accuracy",
    "val_accuracy",
    "activation_memory",
    "peak_memory",
    "epoch_seconds_median",
    "batching",
    "graph",
    "module_configs",
    "world_size",
    "memory_parts",
    "run_epochs",
    "epoch_seconds",
    "peak_address_space",
    "memory_floor",
}


@pytest.mark.parametrize("model", ["gcn", "sage", "gcn2", "gat", "gatv2", "transformer"])
def test_train_writes_the_documented_json(model, tmp_path, capsys):
    path = tmp_path / "out.json"
    argv = TINY + ["--model", model, "--runs", "2", "--json", str(path)]
    if model == "gcn2":
        argv += ["--layers", "4"]
    assert main(["train"] + argv) == 0
    assert "test accuracy" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert set(record) == RECORD_KEYS
    assert record["config"]["bits"] == 2 and record["config"]["block_size"] == 128
    runs, test_nodes = record["test_accuracy"]["runs"], 60  # 20 % of 300 nodes
    assert len(runs) == 2 and record["test_accuracy"]["mean"] == pytest.approx(sum(runs) / 2)
    assert all(abs(score * test_nodes - round(score * test_nodes)) < 1e-6 for score in runs)
    memory = record["activation_memory"]
    assert memory["total"] == memory["compressed"] + memory["uncompressed"] == memory["allocator"] > 0
    # norm statistics, and GAT's attention weights per edge and head, which on 300 nodes outweigh the rest
    assert memory["uncompressed"] < memory["compressed"] or model == "gat"
    assert record["peak_memory"]["bytes"] > 0 and record["epoch_seconds_median"] > 0
    parts = record["memory_parts"]
    data = load_dataset("synthetic:300,1200,16,4")
    assert parts["graph"] == data.edge_index.numel() * 8 and parts["features"] == data.x.numel() * 4
    assert parts["labels_and_masks"] == 300 * 8 + 3 * 300
    assert parts["optimizer_state"] >= 2 * parts["parameters"] > 0  # Adam: two moments per parameter
    assert parts["activations"] == memory["total"] and parts["runtime"] > 0
    assert sum(parts.values()) == record["peak_memory"]["bytes"]
    if sys.platform == "linux":  # VmPeak: the whole process's mapped peak, above what it ever held resident
        assert record["peak_address_space"] >= record["peak_memory"]["bytes"]
        floor = record["memory_floor"]
        assert floor["dataset"] == parts["graph"] + parts["features"] + parts["labels_and_masks"]
        assert floor["two_layer_tensors"] == 2 * 4 * 300 * 16
        assert floor["total"] == floor["dataset"] + floor["runtime"] + floor["two_layer_tensors"]
        assert floor["runtime"] > 2**20 and floor["total"] <= record["peak_address_space"]


def test_fp32_and_explicit_flags(tmp_path):
    fp32, int4 = tmp_path / "fp32.json", tmp_path / "int4.json"
    assert main(["train"] + TINY + ["--config", "fp32", "--json", str(fp32)]) == 0
    assert main(["train"] + TINY + ["--bits", "4", "--block-size", "row", "--rp-norm", "--json", str(int4)]) == 0
    fp32, int4 = json.loads(fp32.read_text()), json.loads(int4.read_text())
    assert fp32["config"] is None and fp32["activation_memory"]["compressed"] == 0
    assert int4["config"]["bits"] == 4 and int4["config"]["block_size"] == "row" and int4["config"]["rp_norm"]
    assert fp32["activation_memory"]["total"] > 8 * int4["activation_memory"]["total"]


def test_train_on_cora_offline(tmp_path, capsys):
    from tests.integration.test_cora import SHARED_DATA

    raw = SHARED_DATA / "Cora" / "raw"
    if not raw.is_dir():
        pytest.skip(f"Cora is not at {raw}")
    shutil.copytree(raw, tmp_path / "Cora" / "raw")
    path = tmp_path / "cora.json"
    assert (
        main(
            [
                "train",
                "--dataset",
                "Cora",
                "--root",
                str(tmp_path),
                "--offline",
                "--model",
                "gcn",
                "--epochs",
                "30",
                "--quiet",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    record = json.loads(path.read_text())
    assert record["test_accuracy"]["mean"] > 0.5  # 30 epochs of a 3-layer GCN already learn Cora
    assert "2,708 nodes" in capsys.readouterr().out


def test_resume_equals_an_uninterrupted_run(tmp_path):
    whole, part = tmp_path / "whole.pt", tmp_path / "part.pt"
    common = ["train", "--dataset", "synthetic:300,1200,16,4", "--hidden", "16", "--quiet", "--runs", "2"]
    assert main(common + ["--epochs", "6", "--checkpoint", str(whole), "--save-every", "6"]) == 0
    # interrupted: the first invocation stops after 3 epochs of run 1
    assert main(common[:-2] + ["--runs", "1", "--epochs", "3", "--checkpoint", str(part), "--save-every", "3"]) == 0
    assert (
        main(common + ["--epochs", "6", "--checkpoint", str(part), "--resume", "--json", str(tmp_path / "r.json")]) == 0
    )
    settings = Settings.from_dict(read_record(whole)["settings"])
    first, second = load_checkpoint(whole, settings), load_checkpoint(part, settings)
    assert first["run"] == second["run"] == 1
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    assert [r["test_accuracy"] for r in first["finished"]] == [r["test_accuracy"] for r in second["finished"]]


def test_an_fp16_resume_equals_an_uninterrupted_run_grad_scaler_included(tmp_path):
    """The GradScaler's scale and growth tracker travel in the checkpoint: a
    resumed fp16 run takes (and skips) the steps the uninterrupted one does."""
    whole, part = tmp_path / "whole.pt", tmp_path / "part.pt"
    common = ["train", "--dataset", "synthetic:300,1200,16,4", "--hidden", "16", "--quiet", "--precision", "fp16"]
    assert main(common + ["--epochs", "6", "--checkpoint", str(whole)]) == 0
    assert main(common + ["--epochs", "3", "--checkpoint", str(part)]) == 0
    assert main(common + ["--epochs", "6", "--checkpoint", str(part), "--resume"]) == 0
    settings = Settings.from_dict(read_record(whole)["settings"])
    first, second = load_checkpoint(whole, settings), load_checkpoint(part, settings)
    assert first["scaler"] == second["scaler"] and first["scaler"]["scale"] > 0
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key


def test_bf16_precision_measures_against_the_autocast_baseline(tmp_path):
    """Under ``--precision bf16`` the FP32 row's activations are bf16 (half of
    float32's), the compressed run's as small as without autocast."""
    kept = {}
    for precision in ("32", "bf16"):
        for config in ("fp32", "default"):
            path = tmp_path / f"{precision}-{config}.json"
            argv = ["train"] + TINY + ["--config", config, "--precision", precision, "--json", str(path)]
            assert main(argv) == 0
            record = json.loads(path.read_text())
            assert record["precision"] == precision
            kept[precision, config] = record["activation_memory"]["total"]
    assert 0.45 < kept["bf16", "fp32"] / kept["32", "fp32"] < 0.6  # the softmax and the masks stay as they are
    assert kept["bf16", "default"] <= 1.1 * kept["32", "default"]


def test_bad_checkpoints_are_refused(tmp_path, capsys):
    path = tmp_path / "c.pt"
    assert main(["train"] + TINY + ["--checkpoint", str(path)]) == 0  # written at the end of the run
    assert main(["train"] + TINY + ["--lr", "0.5", "--checkpoint", str(path), "--resume"]) == 1
    assert "lr: checkpoint 0.01, now 0.5" in capsys.readouterr().err
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert main(["train"] + TINY + ["--checkpoint", str(path), "--resume"]) == 1
    assert "is damaged" in capsys.readouterr().err
    assert main(["train"] + TINY + ["--checkpoint", str(tmp_path / "none.pt"), "--resume"]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--dataset", "synthetic:10,x,3,2"], "synthetic:N,E,D,C"),
        (["--model", "mlp"], "invalid choice: 'mlp'"),
        (["--bits", "3"], "bits must be one of 1, 2, 4, 8"),
        (["--block-size", "big"], 'positive integer or "row"'),
        (["--config", "fp32", "--bits", "2"], "--config fp32 stores nothing compressed"),
        (["--resume"], "need --checkpoint"),
        (["--dropout", "1"], "--dropout: must be in [0, 1), got 1"),
        (["--lr", "0"], "--lr: must be in (0, inf), got 0"),
        (["--weight-decay=-1e-4"], "--weight-decay: must be in [0, inf)"),
        (["--grad-clip", "none"], "--grad-clip: must be a number in (0, inf), got 'none'"),
    ],
)
def test_bad_arguments_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"] + TINY + argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_files_say_where_they_go(tmp_path, capsys):
    assert main(["train", "--dataset", "flickr", "--root", str(tmp_path), "--offline", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("iexact train: error: dataset 'flickr'")
    assert str(tmp_path / "Flickr" / "raw" / "adj_full.npz") in error


@pytest.mark.slow  # eleven child processes; test_bench_train_compares_only_what_is_asked runs in CI
def test_bench_writes_table_json_and_plots(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(
            ["bench", "train"]
            + TINY[:-2]
            + ["--epochs", "2", "--hidden", "16", "--block-sizes", "64,1024,128", "--out", str(out)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "default, G=128 is default: run once" in printed
    table = (out / "bench.md").read_text()
    labels = [
        "FP32",
        "exact()",
        "iexact()",
        "default",
        "compact()",
        "default, G=64",
        "default, G=1024",
        "default, uniform levels",
        "default, calibrated levels",
        "default, shared projection",
        "torch.utils.checkpoint",
    ]
    for label in labels:
        assert f"| {label} |" in table
    records = json.loads((out / "bench.json").read_text())
    assert [r["label"] for r in records] == labels
    by_label = {r["label"]: r for r in records}
    fp32 = by_label["FP32"]["activation_memory"]["allocator"]
    assert by_label["default"]["activation_memory"]["allocator"] * 5 < fp32
    assert by_label["torch.utils.checkpoint"]["activation_memory"]["allocator"] < fp32
    for plot in ("accuracy_vs_memory.png", "layer_memory.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    children = sorted((out / "runs").glob("[0-9][0-9]-run1.json"))  # each child's record, kept as it finished
    assert [json.loads(path.read_text())["label"] for path in children] == [r["label"] for r in records]


def test_bench_train_compares_only_what_is_asked(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["bench", "train"] + TINY + ["--configs", "fp32,default", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| FP32 |" in table and "| default |" in table and "exact()" not in table
    assert [r["label"] for r in json.loads((out / "bench.json").read_text())] == ["FP32", "default"]
    with pytest.raises(SystemExit):
        main(["bench", "train"] + TINY + ["--configs", "fp32,int3"])
    assert "unknown int3: choose from fp32,exact" in capsys.readouterr().err


def test_datasets_lists_names(capsys):
    assert main(["datasets"]) == 0
    assert "ogbn-arxiv" in capsys.readouterr().out


def test_calibrated_levels_are_fitted_saved_and_resumed(tmp_path):
    """levels=calibrated fits each module's levels after 4 steps; they go into the
    checkpoint, and a run interrupted before or after that resumes to the
    uninterrupted run's parameters exactly."""
    common = ["train", "--dataset", "synthetic:300,1200,16,4", "--hidden", "16", "--quiet", "--levels", "calibrated"]
    whole = tmp_path / "whole.pt"
    assert main(common + ["--epochs", "7", "--checkpoint", str(whole)]) == 0
    saved = read_record(whole)
    assert set(saved["levels"]) == {"norms.0.module", "convs.1", "norms.1.module", "convs.2"}
    assert all(len(levels) == 4 and levels != [0.0, 1.0, 2.0, 3.0] for levels in saved["levels"].values())
    for stop in (2, 5):  # before and after the calibration
        part = tmp_path / f"part{stop}.pt"
        assert main(common + ["--epochs", str(stop), "--checkpoint", str(part)]) == 0
        assert main(common + ["--epochs", "7", "--checkpoint", str(part), "--resume"]) == 0
        resumed = read_record(part)
        assert resumed["levels"] == saved["levels"]
        for key, value in saved["model"].items():
            assert torch.equal(value, resumed["model"][key]), (stop, key)


def test_a_format_4_checkpoint_is_upgraded_and_resumes_as_it_would_have(tmp_path):
    """iexact 0.1's checkpoint format 4 named the run by ``config_name``, kept
    unversioned configs and, before plans, no ``module_configs``: it resumes,
    and ends where a run of format 5 from the same state ends."""
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"
    assert main(["train"] + TINY + ["--epochs", "2", "--checkpoint", str(new)]) == 0
    record = read_record(new)
    settings = record["settings"]
    settings["config_name"] = settings.pop("label")
    del settings["kind"], settings["config"]["version"], settings["module_configs"]
    record["version"] = 4
    torch.save(record, old)
    later = ["--epochs", "3", "--resume"]
    assert main(["train"] + TINY + later + ["--checkpoint", str(old)]) == 0
    assert main(["train"] + TINY + later + ["--checkpoint", str(new)]) == 0
    upgraded, current = read_record(old), read_record(new)
    assert upgraded["version"] == current["version"] == 6 and upgraded["settings"] == current["settings"]
    for key, value in current["model"].items():
        assert torch.equal(value, upgraded["model"][key]), key
    record["settings"]["config_name"] = "exact"  # the same checkpoint, of another preset's name
    torch.save(record, old)
    with pytest.raises(CheckpointError, match="label: checkpoint 'exact', now 'default'"):
        load_checkpoint(old, Settings.from_dict(current["settings"]))


TINY = ["--dataset", "synthetic:300,1200,16,4", "--epochs", "3", "--quiet", "--hidden", "16"]


def test_ctrl_c_says_how_to_resume_and_the_resume_works(tmp_path):
    checkpoint = tmp_path / "c.pt"
    argv = (
        ["train"]
        + TINY[:2]
        + [
            "--quiet",
            "--hidden",
            "16",
            "--epochs",
            "100000",
            "--checkpoint",
            str(checkpoint),
            "--save-every",
            "1",
            "--threads",
            "1",
        ]
    )
    # SIGINT as a terminal delivers it, even where this run's shell started it in the background
    # (which ignores SIGINT, and the ignoring is inherited)
    child = subprocess.Popen(
        [sys.executable, "-m", "iexact"] + argv,
        stderr=subprocess.PIPE,
        text=True,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, error = child.communicate(timeout=60)
    assert child.returncode == 130
    lines = error.strip().splitlines()
    assert lines[-1].startswith("iexact train: interrupted; resume with: iexact train ") and "Traceback" not in error
    assert lines[-1].endswith("--resume")
    saved = read_record(checkpoint)
    assert saved["state"]["epoch"] >= 1
    resumed = lines[-1].split("resume with: iexact ", 1)[1].split()
    resumed[resumed.index("--epochs") + 1] = str(saved["state"]["epoch"] + 1)
    assert main(resumed) == 0


def test_a_result_that_cannot_be_written_is_a_failure_not_a_success(tmp_path, capsys, monkeypatch):
    """The disk fills up as the run ends: one line and exit status 1, never 0."""
    import errno

    from iexact.experiments.commands import train

    def full(path, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train, "write_json_atomically", full)
    path = tmp_path / "r.json"
    assert main(["train"] + TINY + ["--epochs", "1", "--json", str(path)]) == 1
    error = capsys.readouterr().err
    assert error == f"iexact train: error: No space left on device: {path}\n" and not path.exists()
