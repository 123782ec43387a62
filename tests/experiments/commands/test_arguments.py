"""The shared argument groups: every bad value refused with its name."""

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
