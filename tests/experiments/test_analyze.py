"""``iexact analyze`` end to end: the report, its figures, from training or a checkpoint."""

import json

import pytest

from iexact.experiments.cli import main

TINY = ["--dataset", "synthetic:300,1200,16,4", "--hidden", "16", "--quiet"]


def test_analyze_writes_the_report_and_figures(tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze"] + TINY + ["--epochs", "2", "--draws", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "The clipped normal is closer than the uniform distribution (KS) for" in printed
    record = json.loads((out / "analyze.json").read_text())
    assert record["trained"] == "2 epochs" and record["gradient_error"]["draws"] == 2
    layers = [a["layer"] for a in record["activations"]]
    assert layers == ["norms.0.module", "convs.1", "norms.1.module", "convs.2"]
    for a in record["activations"]:
        assert set(a["fits"]) == {"uniform", "normal", "clipped_normal"}
        assert set(a["variance"]) == {"uniform", "optimal", "calibrated"} and a["block_size"] == 128
    assert set(record["gradient_error"]["per_parameter"]) >= {"convs.0.lin_l.weight", "convs.2.lin_r.weight"}
    assert (out / "analyze.md").read_text().startswith("# sage on synthetic:300,1200,16,4")
    for figure in ("histograms.png", "variance.png", "gradient_error.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main(["analyze"] + TINY + ["--out", str(out)])
    assert "add --overwrite" in capsys.readouterr().err


def test_analyze_reads_a_train_checkpoint_and_refuses_fp32(tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    assert main(["train"] + TINY + ["--epochs", "2", "--checkpoint", str(checkpoint)]) == 0
    out = tmp_path / "analysis"
    assert main(["analyze"] + TINY + ["--checkpoint", str(checkpoint), "--draws", "1", "--out", str(out)]) == 0
    assert json.loads((out / "analyze.json").read_text())["trained"] == "checkpoint"
    assert (
        main(["analyze"] + TINY + ["--hidden", "8", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "other")])
        == 1
    )
    assert "hidden: checkpoint 16, now 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze"] + TINY + ["--config", "fp32"])
    assert "invalid choice: 'fp32'" in capsys.readouterr().err
