"""``iexact bench codec`` and ``iexact bench memory``: the codec and memory benchmarks."""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iexact import PRESETS, activation_memory
from iexact.experiments import bench
from iexact.experiments.bench import codec_report, memory_configs, preset_rows
from iexact.experiments.cli import main
from iexact.experiments.zoo import zoo


def test_codec_table_printed(capsys):
    assert main(["bench", "codec", "--rows", "300", "--width", "64", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name, config in PRESETS.items():
        assert f"| {name} | {config} |" in out
    assert "300 x 64 float32 (76,800 bytes)" in out and "1 threads" in out


def test_preset_rows_are_consistent():
    x = torch.randn(500, 128, generator=torch.Generator().manual_seed(0))
    by_name = {row["preset"]: row for row in preset_rows(x, repeats=1, seed=0)}
    assert by_name["iexact"]["bytes"] < by_name["exact"]["bytes"]
    for row in by_name.values():
        assert row["ratio"] == pytest.approx(500 * 128 * 4 / row["bytes"])
        # INT2 after an 8x projection loses most of the signal, but not all of it
        assert 0.5 < row["relative_error"] < 50 and row["compress_ms"] > 0


def test_codec_sweep_adds_the_throughput_table():
    report = codec_report(rows=64, width=32, repeats=1, seed=0, sweep=True)
    assert "straightforward PyTorch INT2" in report
    assert sum(line.startswith("| 2 | 64 |") for line in report.splitlines()) == 2  # uniform and optimal


def test_memory_table_lists_every_config_with_its_ratio_to_fp32(capsys):
    """Large enough that the MiB printed with two decimals give the ratio to 1 %."""
    assert main(["bench", "memory", "--nodes", "20000", "--edges", "60000", "--features", "16"]) == 0
    out = capsys.readouterr().out
    cells = {
        line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")
        for line in out.splitlines()
        if line.startswith("| ") and "MiB" in line
    }
    assert list(cells) == list(memory_configs())
    fp32 = float(cells["FP32"][1].removesuffix(" MiB"))
    for name, row in cells.items():
        total, ratio = float(row[1].removesuffix(" MiB")), float(row[2].removesuffix("x"))
        assert ratio == pytest.approx(fp32 / total, rel=0.01), name
        assert name == "FP32" or ratio > 5
    assert "Per layer, default config:" in out


def test_every_model_family_is_compressed_and_its_gradient_measured(capsys):
    argv = ["bench", "memory", "--models", "--nodes", "300", "--edges", "1500", "--draws", "1", "--threads", "1"]
    assert main(argv) == 0
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    by_name = {row[0]: row for row in rows[1:]}
    assert list(by_name) == list(zoo(16, 16, 2, torch.zeros(2, 1, dtype=torch.long)))
    for name, (_, _, _, ratio, _, error, of_mean, _) in by_name.items():
        assert float(ratio.removesuffix("×")) > 1.5, name  # each keeps less than FP32
        assert 0 < float(of_mean) <= float(error) < 5, name
    assert {row[-1] for row in by_name.values()} == {"–"}  # nothing through the fallback


def test_a_family_planned_for_an_error_target_measures_within_it():
    from iexact.experiments.zoo import _planned_row

    generator = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, 300, (2, 1500), generator=generator)
    x, labels = torch.randn(300, 16, generator=generator), torch.randint(0, 8, (300,), generator=generator)
    torch.manual_seed(0)
    model, _ = zoo(16, 16, 8, edge_index)["GraphSAGE"]()
    fp32 = activation_memory(model, x, edge_index).total
    ratio, cells = _planned_row(model, (x, edge_index, {}), labels, fp32, 0.5, 2)
    assert ratio > 5 and cells == f" {ratio:.1f}× | {float(cells.split('|')[1]):.3f}"
    assert float(cells.split("|")[1]) <= 0.5
    assert _planned_row(model, (x, edge_index, {}), labels, fp32, 1e-9, 1) == (None, " none within it | –")


@pytest.mark.slow
def test_every_model_family_is_planned_within_an_error_target(capsys):
    argv = ["bench", "memory", "--models", "--nodes", "300", "--edges", "1500", "--draws", "2", "--threads", "1"]
    assert main([*argv, "--max-error", "0.8"]) == 0
    out = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    for row in rows[1:]:
        assert row[-2].endswith("×") and float(row[-1]) <= 0.8, row[0]
    assert "Planned within 0.8: 14 of 14 families" in out


@pytest.mark.parametrize("argv", [["bench", "codec", "--rows", "0"], ["bench", "codec", "--width", "-3"]])
def test_a_size_below_one_is_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"{argv[2]}: must be a positive integer" in capsys.readouterr().err


def test_gradient_table_lists_every_idea(capsys):
    from iexact.experiments.bench import gradient_configs

    assert main(["bench", "gradients", "--dataset", "synthetic:300,1200,16,4", "--draws", "1", "--steps", "1"]) == 0
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith("| config")
    }
    assert set(gradient_configs()) | {"FP32"} == set(rows)
    # the shared projection's error does not average over rows; the sketch's does
    assert float(rows["shared RP 8"][1]) > float(rows["sketch RP 8"][1])


def test_the_gpu_benchmark_script_runs(tmp_path):
    """``benchmarks/gpu.py`` on the CPU (its smoke mode), so the script is ready the day a GPU is lent."""

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
    finished = subprocess.run(
        [
            sys.executable,
            str(script),
            "--device",
            "cpu",
            "--rows",
            "512",
            "--repeats",
            "1",
            "--epochs",
            "2",
            "--datasets",
            "synthetic:300,1200,16,4",
            "synthetic:300,1200,16,4@csr",
            "--dtype",
            "bfloat16",
            "--precision",
            "bf16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert finished.returncode == 0, finished.stderr
    out = finished.stdout
    assert "| torch copy_ | – | – | – | – |" in out and "| default |" in out and "| FP32 |" in out
    assert "| torch.utils.checkpoint |" in out and "| shared | compress | `aten::mm` |" in out
    assert "PyTorch kernels" in out
    # the stock modules have no bf16 CSR product: the FP32 row says so rather than stopping the script
    assert "| FP32 | fails: Expected tensor for argument #1 'other' to have scalar type Float" in out
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "no CUDA device here" in refused.stderr


TINY = ["--dataset", "synthetic:300,1200,16,4", "--epochs", "3", "--quiet", "--hidden", "16"]


def test_bench_train_runs_each_run_alone_alternating_and_merges_them_as_one_process_trains_them(tmp_path):
    """--runs 2: four children, FP32 and the default alternating run by run; each
    configuration's merged record has the runs a single ``iexact train --runs 2``
    process trains (the same seeds, accuracies and histories), every epoch time,
    and the gradient error measured with run 1 only."""
    out = tmp_path / "bench"
    argv = TINY + ["--runs", "2", "--threads", "1"]
    assert main(["bench", "train"] + argv + ["--configs", "fp32,default", "--out", str(out)]) == 0
    children = sorted((out / "runs").glob("*.job.json"), key=lambda path: path.stat().st_mtime_ns)
    jobs = [json.loads(path.read_text()) for path in children]
    assert [(job["settings"]["label"], job["only_run"]) for job in jobs] == [
        ("FP32", 0),
        ("default", 0),
        ("FP32", 1),
        ("default", 1),
    ]
    assert "gradient_error" in json.loads((out / "runs" / "01-run1.json").read_text())
    assert "gradient_error" not in json.loads((out / "runs" / "01-run2.json").read_text())
    merged = json.loads((out / "bench.json").read_text())[1]
    alone = tmp_path / "alone.json"
    assert main(["train"] + argv + ["--json", str(alone)]) == 0
    single = json.loads(alone.read_text())
    assert merged["runs"] == single["runs"] == 2
    for key in ("test_accuracy", "val_accuracy", "run_epochs", "gradient_error", "activation_memory"):
        assert merged[key] == single[key], key
    assert [len(seconds) for seconds in merged["epoch_seconds"]] == [3, 3]
    kept = [second for seconds in merged["epoch_seconds"] for second in seconds[1:]]  # first epochs: warm-up
    assert merged["epoch_seconds_median"] == statistics.median(kept)


def test_a_job_of_one_run_names_a_run_it_has_and_takes_no_checkpoint():
    from iexact.experiments.job import Job
    from iexact.experiments.settings import RunKind, Settings

    settings = Settings("synthetic", "sage", RunKind.FP32, "FP32", None)
    assert Job(settings, epochs=1, runs=3, only_run=2).only_run == 2
    with pytest.raises(ValueError, match=r"only_run=3 is invalid: a run in \[0, 3\)"):
        Job(settings, epochs=1, runs=3, only_run=3)
    with pytest.raises(ValueError, match="it takes no checkpoint"):
        Job(settings, epochs=1, runs=3, only_run=0, checkpoint="run.pt")


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
    assert json.loads((out / "runs" / "01-run1.json").read_text())["failed"].startswith("killed by signal 9")


def test_ctrl_c_during_bench_train_stops_every_process_with_one_line(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it, while the first
    child trains: the parent says what it kept, no process prints a traceback."""
    import signal
    import time

    out = tmp_path / "bench"
    argv = [
        "bench",
        "train",
        "--dataset",
        "synthetic:300,1200,16,4",
        "--hidden",
        "16",
        "--epochs",
        "100000",
        "--configs",
        "fp32,default",
        "--quiet",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    parent = subprocess.Popen(
        [sys.executable, "-m", "iexact", *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not (out / "runs" / "00-run1.job.json").exists() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
    time.sleep(3)  # the child is importing or training
    os.killpg(parent.pid, signal.SIGINT)
    _, error = parent.communicate(timeout=60)
    assert parent.returncode == 130 and "Traceback" not in error, error
    assert error.strip().splitlines()[-1] == f"iexact bench: interrupted; finished runs are in {out / 'runs'}"


def test_a_record_without_the_allocators_count_is_tabled_by_its_accounted_bytes():
    """Under --memory-limit the profiler behind the allocator's count may not fit (allocator None)."""

    def record(kind, total, allocator):
        return {
            "label": kind,
            "kind": kind,
            "activation_memory": {"total": total, "allocator": allocator},
            "epoch_seconds_median": 1.0,
            "test_accuracy": {"mean": 0.5, "std": 0.0},
            "peak_memory": {"bytes": 2**30},
            "gradient_error": None,
        }

    table = bench.markdown_table([record("fp32", 100 * 2**20, 100 * 2**20), record("compressed", 2**20, None)])
    assert "| compressed | 50.0 ± 0.0 | – | 1.00 MiB | 100.0× less | not measured |" in table


def test_the_bf16_rounding_script_prints_its_table(capsys):
    """``benchmarks/bf16_rounding.py``, whose figures docs/results.md quotes, on a small synthetic graph."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bf16_rounding.py"
    spec = importlib.util.spec_from_file_location("bf16_rounding", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dataset", "synthetic:300,1200,16,4", "--models", "sage", "--threads", "1"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.startswith("| synthetic:300,1200,16,4 | sage | ")
    assert 0 < float(row.split("|")[3]) < 0.2


def test_the_gps_batch_script_prints_its_table(capsys):
    """``benchmarks/gps_batch.py``, whose figures docs/method.md quotes, on a small batch."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gps_batch.py"
    spec = importlib.util.spec_from_file_location("gps_batch", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--graphs", "4", "--min-nodes", "5", "--max-nodes", "8", "--hidden", "16", "--draws", "1", "--threads", "1"]
    assert module.main(argv) == 0
    cells = capsys.readouterr().out.strip().splitlines()[-1].strip("| ").split(" | ")
    assert float(cells[2].removesuffix("×")) > 1.5 and 0 < float(cells[4]) < float("inf")


def test_the_pyg_examples_script_prints_its_table(capsys):
    """``benchmarks/pyg_examples.py``, whose figures the README quotes, on a small synthetic graph."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "pyg_examples.py"
    spec = importlib.util.spec_from_file_location("pyg_examples", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--dataset", "synthetic:2000,8000,16,4", "--runs", "1", "--epochs", "2", "--threads", "1"]  # above 64 KiB
    assert module.main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()[-2:]
    for row, name in zip(rows, ("gcn.py", "gat.py"), strict=True):
        cells = row.strip("| ").split(" | ")
        assert cells[0] == name
        assert float(cells[3].removesuffix("×")) > float(cells[2].removesuffix("×")) > 1  # the model's code counts
