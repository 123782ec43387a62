"""Nothing the user saved is lost, nothing fails late: overwrites refused, output
paths checked before training, bench results kept when a configuration fails,
stale temporaries cleaned, resumes that would drop results refused, damaged
checkpoints named, divergence and Ctrl-C stopped with one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from iexact.experiments import bench
from iexact.experiments.cli import main
from iexact.experiments.files import remove_stale_temporaries, write_atomically

TINY = ["--dataset", "synthetic:300,1200,16,4", "--epochs", "3", "--quiet", "--hidden", "16"]


def _refused(argv, capsys, message, code=2):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    error = capsys.readouterr().err
    assert message in error, error
    return error


@pytest.mark.parametrize("flag", ["--json", "--checkpoint"])
def test_an_existing_result_is_never_overwritten_unasked(flag, tmp_path, capsys):
    path = tmp_path / "results"
    path.write_text("two 1000-epoch runs")
    _refused(
        ["train"] + TINY + [flag, str(path)],
        capsys,
        f"{flag} {path} already exists and would be overwritten: add --resume",
    )
    assert path.read_text() == "two 1000-epoch runs"
    assert main(["train"] + TINY + [flag, str(path), "--overwrite"]) == 0
    assert path.read_bytes() != b"two 1000-epoch runs"
    _refused(["train"] + TINY + ["--checkpoint", str(path), "--resume", "--overwrite"], capsys, "pick one")


@pytest.mark.parametrize(
    "where, message",
    [
        (lambda tmp: tmp / "folder", "is a directory: name a file inside it"),
        (lambda tmp: tmp / "afile" / "out.json", "is a file, not a directory"),
        (lambda tmp: tmp / "readonly" / "sub" / "out.json", "cannot be written"),
        (lambda tmp: "/proc/iexact-test/out.json", "cannot be written: /proc"),
    ],
)
@pytest.mark.parametrize("flag", ["--json", "--checkpoint"])
def test_output_paths_are_checked_before_training(flag, where, message, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "readonly").mkdir(mode=0o555)
    if "readonly" in str(where(tmp_path)) and os.access(tmp_path / "readonly", os.W_OK):
        pytest.skip("running as a user who may write anywhere (root); the /proc case stands in")
    started = time.perf_counter()
    error = _refused(["train"] + TINY + ["--epochs", "500", flag, str(where(tmp_path))], capsys, message)
    assert error.startswith("usage:") and time.perf_counter() - started < 5  # refused, not trained first


def test_bench_out_must_be_a_folder_and_earlier_results_stay(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(["bench", "train"] + TINY + ["--configs", "fp32", "--out", str(afile)], capsys, "is a file: name a folder")
    out = tmp_path / "bench"
    out.mkdir()
    (out / "bench.json").write_text("[]")
    _refused(["bench", "train"] + TINY + ["--configs", "fp32", "--out", str(out)], capsys, "add --overwrite")
    assert (out / "bench.json").read_text() == "[]"


def test_bench_keeps_every_finished_configuration_when_one_is_killed(tmp_path, capsys, monkeypatch):
    """The second child is killed (SIGKILL): the first and third are in the table,
    in bench.json and in runs/, the killed one is named, and the exit status is 1."""
    real_run = subprocess.run

    def run(command, **kwargs):
        job = json.loads(open(command[-2]).read())
        if job["settings"]["label"] == "exact()":
            command = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
        return real_run(command, **kwargs)

    monkeypatch.setattr(bench.subprocess, "run", run)
    out = tmp_path / "bench"
    assert main(["bench", "train"] + TINY + ["--configs", "fp32,exact,default", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "exact(): failed, killed by signal 9" in captured.out
    assert "exact() failed (see the table; the others are complete)" in captured.err
    records = json.loads((out / "bench.json").read_text())
    assert [r["label"] for r in records] == ["FP32", "exact()", "default"]
    assert "failed" in records[1] and "test_accuracy" in records[0] and "test_accuracy" in records[2]
    table = (out / "bench.md").read_text()
    assert "| exact() | failed: killed by signal 9" in table and "| default | " in table
    assert json.loads((out / "runs" / "01.json").read_text())["failed"].startswith("killed by signal 9")


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    target = tmp_path / "c.pt"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".c.pt.{int(gone.stdout)}.abcd.tmp"
    live = tmp_path / f".c.pt.{os.getpid()}.efgh.tmp"
    other = tmp_path / f".d.pt.{int(gone.stdout)}.abcd.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == [stale]
    assert live.exists() and other.exists() and not stale.exists()
    write_atomically(target, lambda file: file.write(b"whole"))
    assert target.read_bytes() == b"whole" and sorted(tmp_path.iterdir()) == sorted([target, live, other])


def test_an_atomic_write_leaves_the_permissions_a_plain_write_would(tmp_path):
    plain, atomic = tmp_path / "plain.json", tmp_path / "atomic.json"
    plain.write_bytes(b"{}")
    write_atomically(atomic, lambda file: file.write(b"{}"))
    assert atomic.stat().st_mode == plain.stat().st_mode
    atomic.chmod(0o640)
    write_atomically(atomic, lambda file: file.write(b"[]"))  # a replaced file keeps its own
    assert atomic.stat().st_mode & 0o777 == 0o640 and atomic.read_bytes() == b"[]"


def test_a_train_run_cleans_the_temporaries_a_killed_run_left(tmp_path):
    checkpoint = tmp_path / "c.pt"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".c.pt.{int(gone.stdout)}.abcd.tmp"
    stale.write_bytes(b"partial")
    assert main(["train"] + TINY + ["--checkpoint", str(checkpoint)]) == 0
    assert not stale.exists() and checkpoint.is_file()


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
        state = torch.load(checkpoint, weights_only=True)["model"]
        assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


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
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["state"]["epoch"] >= 1
    resumed = lines[-1].split("resume with: iexact ", 1)[1].split()
    resumed[resumed.index("--epochs") + 1] = str(saved["state"]["epoch"] + 1)
    assert main(resumed) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "gat", "--hidden", "10"], "hidden=10 must be a multiple of the 4 attention heads"),
        (["--block-size", str(2**61)], 'block_size must be a positive int up to 2**31 - 1 or "row"'),
        (["--seed", str(2**70)], "--seed: must be an integer in [0, 2**62)"),
        (["--seed", "-1"], "--seed: must be an integer in [0, 2**62), got -1"),
        (["--device", "meta"], "unsupported device 'meta': use cpu, cuda or cuda:N"),
    ],
)
def test_arguments_that_used_to_end_in_a_traceback(argv, message, capsys):
    error = _refused(["train"] + TINY + argv, capsys, message)
    assert "Traceback" not in error


def test_a_dataset_beyond_the_memory_limit_is_refused_before_it_is_built(capsys):
    started = time.perf_counter()
    assert main(["train", "--dataset", "synthetic:3000000,1000,100,4", "--memory-limit", "2GiB", "--quiet"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "needs at least 1.15 GiB (features 1.12 GiB" in error[0]
    assert "left under the memory limit of 2.00 GiB" in error[0]
    assert time.perf_counter() - started < 10  # refused, not built (3M x 100 floats)


def test_the_estimate_is_a_lower_bound_of_what_is_held():
    from iexact.experiments.data import load_dataset
    from iexact.experiments.estimate import least_bytes

    data = load_dataset("synthetic:3000,20000,16,4")
    parts = least_bytes("synthetic:3000,20000,16,4", "sage", None, None, False, True, "edge_index", "data")
    assert parts["features"] == data.x.nbytes
    assert 0.9 * data.edge_index.nbytes <= parts["graph"] <= data.edge_index.nbytes
    assert parts["messages"] <= data.edge_index.size(1) * 128 * 4 and "building" in parts
    compressed = least_bytes("synthetic:3000,20000,16,4", "sage", None, None, True, True, "edge_index", "data")
    assert "activations" not in compressed and "messages" not in compressed
    assert least_bytes("my-own-graph", "sage", None, None, True, True, "edge_index", "data") is None


def test_the_estimate_of_a_cached_csr_graph_is_a_lower_bound(tmp_path, monkeypatch):
    from iexact.experiments import data as datasets
    from iexact.experiments.estimate import least_bytes

    monkeypatch.setattr(datasets, "CACHED_EDGES", 1000)
    adj_t = datasets.load_prepared("synthetic:3000,20000,16,4", tmp_path, layout="csr").adj_t
    parts = least_bytes("synthetic:3000,20000,16,4", "sage", None, None, True, True, "csr", tmp_path)
    held = sum(part.untyped_storage().nbytes() for part in (adj_t.crow_indices(), adj_t.col_indices(), adj_t.values()))
    assert "building" not in parts and 0.9 * adj_t.col_indices().nbytes <= parts["graph"] <= held
