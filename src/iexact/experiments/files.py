r"""The files the harness writes: atomically, never over a user's results unasked,
into places checked before any training starts.

Every file is written to a temporary ``.NAME.PID.XXXX.tmp`` beside it and renamed
over it (:func:`write_atomically`), so readers see the old file or the new one.
A process killed in between leaves its temporary behind; the next run that
writes the same file removes those of processes no longer alive
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import UsageError


class OutputError(UsageError):
    """An output path that cannot or may not be written."""


def write_atomically(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, flush it
    to disk, then rename it over ``path``: readers see the old file or the new
    one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        mode = _plain_file_mode(path)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str) -> None:
    """:func:`write_atomically` of ``text`` in UTF-8."""
    data = text.encode()
    write_atomically(path, lambda file: file.write(data))


def write_json_atomically(path: str | Path, record, indent: int = 2) -> None:
    """:func:`write_atomically` of ``record`` as indented JSON and a final newline."""
    write_text_atomically(path, json.dumps(record, indent=indent) + "\n")


def _plain_file_mode(path: Path) -> int | None:
    """The permissions ``open(path, "w")`` would leave (the temporary is
    created private, 0600): those of the file replaced, else ``0666`` less
    the process's umask (Linux ``/proc/self/status``); ``None`` where unknown."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        pass
    try:
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return 0o666 & ~umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries that :func:`write_atomically` left beside ``path``
    in processes that are gone (killed mid-write); returns what was removed."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for temporary in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temporary.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        temporary.unlink(missing_ok=True)
        removed.append(temporary)
    return removed


def check_writable(path: str | Path, what: str) -> None:
    """Raise :class:`OutputError` unless a file can be created or replaced at
    ``path``: it must not be a directory, and its nearest existing ancestor
    must be a directory in which this process can create a file (tried, and
    removed at once; missing folders are created when writing)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory: name a file inside it")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path} cannot be written: {ancestor} is a file, not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".iexact-probe.", dir=ancestor)
    except OSError as error:
        raise OutputError(f"{what} {path} cannot be written: {ancestor} is not writable ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def check_folder(path: str | Path, what: str) -> None:
    """Raise :class:`OutputError` unless ``path`` is, or can be created as, a
    writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file: name a folder (it is created if missing)")
    check_writable(path / "probe", what)


def refuse_overwrite(path: str | Path, what: str, allowed: str) -> None:
    """Raise :class:`OutputError` when ``path`` exists: it holds earlier results,
    which are replaced only when the user says so (``allowed`` names how)."""
    if Path(path).exists():
        raise OutputError(f"{what} {path} already exists and would be overwritten: {allowed}")
