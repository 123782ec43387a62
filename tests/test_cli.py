import pytest

from iexact.cli import main, preset_table


def test_presets_table_printed(capsys):
    assert main(["presets", "--rows", "300", "--width", "64", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("exact", "iexact", "default"):
        assert f"| {name} |" in out
    assert "300 x 64 float32 (76,800 bytes)" in out


def test_preset_results_are_consistent():
    rows = preset_table(rows=500, width=128, repeats=1, seed=0)
    by_name = {row["preset"]: row for row in rows}
    assert by_name["iexact"]["bytes"] < by_name["exact"]["bytes"]
    for row in rows:
        assert row["ratio"] == pytest.approx(500 * 128 * 4 / row["bytes"])
        assert 0 < row["error_variance"] < 50 and row["compress_ms"] > 0


@pytest.mark.parametrize("argv", [["presets", "--rows", "0"], ["presets", "--width", "-3"], ["fit"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: iexact" in capsys.readouterr().err
