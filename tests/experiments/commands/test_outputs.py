"""The output rule: outputs checked before any work, nothing replaced unasked."""

import os
import subprocess
import sys
import time

import pytest

from iexact.experiments.cli import main

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


def test_a_train_run_cleans_the_temporaries_a_killed_run_left(tmp_path):
    checkpoint = tmp_path / "c.pt"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".c.pt.{int(gone.stdout)}.abcd.tmp"
    stale.write_bytes(b"partial")
    assert main(["train"] + TINY + ["--checkpoint", str(checkpoint)]) == 0
    assert not stale.exists() and checkpoint.is_file()


def test_two_outputs_naming_one_file_are_refused(tmp_path, capsys):
    """``--json a --checkpoint a`` used to leave only the JSON: the checkpoint was lost."""
    path = tmp_path / "a.json"
    _refused(["train"] + TINY + ["--json", str(path), "--checkpoint", str(path)], capsys, "both name")
    assert not path.exists()
    same = tmp_path / "sub" / ".." / "a.json"  # the same file, spelled otherwise
    _refused(["train"] + TINY + ["--json", str(path), "--checkpoint", str(same)], capsys, "both name")


def test_bench_batch_size_json_is_never_replaced_unasked(tmp_path, capsys):
    path = tmp_path / "prec.json"
    path.write_text("[]")
    argv = ["bench", "batch-size", "--dataset", "synthetic:300,1200,16,4", "--memory", "1MiB", "--json", str(path)]
    _refused(argv, capsys, "--json")
    assert path.read_text() == "[]"
