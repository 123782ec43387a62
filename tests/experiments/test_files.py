"""Atomic writes, and the temporaries killed writers leave."""

import os
import subprocess
import sys

from iexact.experiments.files import remove_stale_temporaries, write_atomically


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
