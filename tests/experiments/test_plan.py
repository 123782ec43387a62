"""``iexact plan`` end to end: the plan file, its check, and ``iexact train --plan``."""

import json

import pytest

from iexact.config import CompressionConfig
from iexact.experiments.cli import main
from iexact.experiments.settings import Settings

TINY = ["--dataset", "synthetic:300,1200,16,4", "--hidden", "16"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A plan of the tiny GCN within 40 KiB (its FP32 activations: 300 KiB)."""
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert main(["plan"] + TINY + ["--model", "gcn", "--memory", "40KiB", "--draws", "2", "--out", str(path)]) == 0
    return path


def test_plan_writes_a_checked_plan_that_train_uses(planned, tmp_path, capsys):
    record = json.loads(planned.read_text())
    assert record["format"] == "iexact-plan-1" and record["budget"] == 40 * 1024
    assert (record["dataset"], record["model"], record["layers"], record["hidden"]) == (TINY[1], "gcn", 3, 16)
    assert record["predicted"]["bytes"] <= record["budget"]
    assert record["predicted"]["bytes"] == pytest.approx(record["measured"]["bytes"], rel=0.05)
    assert set(record["modules"]) == {layer["name"] for layer in record["predicted"]["layers"]}
    assert record["fp32_bytes"] > 5 * record["budget"]
    results = tmp_path / "run.json"
    assert (
        main(
            ["train"]
            + TINY
            + ["--model", "gcn", "--plan", str(planned), "--epochs", "2", "--quiet", "--json", str(results)]
        )
        == 0
    )
    assert "the plan of" in capsys.readouterr().out
    run = json.loads(results.read_text())
    assert run["activation_memory"]["total"] == pytest.approx(record["predicted"]["bytes"], rel=0.05)
    assert run["kind"] == run["label"] == "plan" and run["module_configs"] == record["modules"]
    settings = Settings.from_dict({key: run[key] for key in Settings.__dataclass_fields__})
    assert dict(settings.module_configs) == {
        name: CompressionConfig.from_dict(config) for name, config in record["modules"].items()
    }


def test_plan_prints_the_commands_and_refuses_an_existing_file(planned, capsys):
    assert (
        main(
            ["plan"]
            + TINY
            + [
                "--model",
                "gcn",
                "--memory",
                "40KiB",
                "--draws",
                "1",
                "--root",
                "elsewhere",
                "--out",
                str(planned),
                "--overwrite",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        f"train with: iexact train --dataset {TINY[1]} --root elsewhere --model gcn --hidden 16 --plan {planned}"
        in printed
    )
    assert "measured" in printed and "predicted" in printed
    with pytest.raises(SystemExit) as refused:
        main(["plan"] + TINY + ["--model", "gcn", "--memory", "40KiB", "--out", str(planned)])
    assert refused.value.code == 2 and "add --overwrite" in capsys.readouterr().err


def test_an_impossible_budget_names_the_smallest(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan"] + TINY + ["--model", "sage", "--memory", "1KiB", "--draws", "1", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "iexact plan: error: no plan keeps the activations within 1,024 B" in error
    assert "the smallest keeps" in error and not out.exists()


def test_a_plan_for_an_error_target_is_measured_within_it(tmp_path, capsys):
    out = tmp_path / "plan.json"
    argv = ["plan"] + TINY + ["--model", "sage", "--max-error", "0.5", "--draws", "2", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["budget"] is None and record["max_error"] == 0.5
    assert record["measured"]["gradient_error"] <= 0.5 * 1.3  # remeasured with other draws than the planner's
    printed = capsys.readouterr().out
    assert "gradient error at most 0.5" in printed and "error target 0.5" in printed
    with pytest.raises(SystemExit) as refused:
        main(["plan"] + TINY + ["--model", "sage", "--max-error", "0.5", "--memory", "1MiB", "--out", str(out)])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_train_refuses_a_plan_made_for_another_run(planned, tmp_path, capsys):
    def refused(*arguments) -> str:
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--dataset", TINY[1], "--epochs", "1", "--quiet", *arguments])
        assert exit_.value.code == 2
        return capsys.readouterr().err

    assert "was made for --model gcn (not sage), --hidden 16 (not 128)" in refused(
        "--model", "sage", "--plan", str(planned)
    )
    assert "drop --bits" in refused("--model", "gcn", "--hidden", "16", "--plan", str(planned), "--bits", "4")
    not_a_plan = tmp_path / "other.json"
    not_a_plan.write_text("[1, 2]")
    assert "is no iexact plan file" in refused("--model", "gcn", "--plan", str(not_a_plan))
    broken = json.loads(planned.read_text())
    broken["modules"]["convs.1"]["bits"] = 3
    not_a_plan.write_text(json.dumps(broken))
    assert "invalid iexact plan file: CompressionConfig.bits=3" in refused(
        "--model", "gcn", "--hidden", "16", "--plan", str(not_a_plan)
    )


@pytest.mark.parametrize(
    "damage, message, code",
    [
        (lambda path, record: path.unlink(), "does not exist (write one with iexact plan)", 1),
        (lambda path, record: (path.unlink(), path.mkdir()), "is a directory, not a plan file", 2),
        (lambda path, record: path.write_bytes(b"\x80\x81binary"), "it is not JSON", 2),
        (lambda path, record: path.write_text("{"), "it is not JSON", 2),
        (lambda path, record: path.write_text("null"), "is no iexact plan file", 2),
        (
            lambda path, record: _write(path, {**record, "format": "iexact-plan-2"}),
            "this iexact reads 'iexact-plan-1'",
            2,
        ),
        (lambda path, record: _write(path, {**record, "base": None}), "missing or malformed base (dict)", 2),
        (lambda path, record: _write(path, {k: v for k, v in record.items() if k != "modules"}), "modules (dict)", 2),
        (lambda path, record: _write(path, {**record, "layers": "3"}), "missing or malformed layers (int)", 2),
        (
            lambda path, record: _write(path, {**record, "modules": {"convs.9": record["base"]}}),
            "configures convs.9, which gcn with 3 layers does not compress (it compresses ",
            2,
        ),
    ],
    ids=["missing", "directory", "binary", "truncated", "null", "newer", "base", "modules", "layers", "module name"],
)
def test_a_bad_plan_file_is_named_before_any_data_loads(planned, tmp_path, capsys, damage, message, code):
    path = tmp_path / "plan.json"
    record = json.loads(planned.read_text())
    _write(path, record)
    damage(path, record)
    argv = ["train", "--dataset", TINY[1], "--model", "gcn", "--hidden", "16", "--epochs", "1", "--quiet"]
    try:
        status = main(argv + ["--plan", str(path)])
    except SystemExit as exit_:
        status = exit_.code
    error = capsys.readouterr().err
    assert status == code and message in error and "Traceback" not in error
    assert "dataset synthetic" not in capsys.readouterr().out  # refused before the data loaded


def _write(path, record):
    path.write_text(json.dumps(record))
