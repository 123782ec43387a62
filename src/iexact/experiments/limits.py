r"""Memory limits: run a training process under an address-space limit and say clearly when it is hit.

``iexact train --memory-limit 8GiB`` (and every child of ``iexact bench train
--memory-limit``) lowers its own ``RLIMIT_AS`` before loading anything, so an
allocation beyond the limit fails inside that process (torch raises, Python
raises ``MemoryError``) instead of the machine running out of memory and the
kernel's OOM killer ending some process without a word. The limit is on the
address space, which also counts what the interpreter and libraries map
without touching (about 1.2 GB for Python with torch and PyG on Linux).
"""

from __future__ import annotations

import os
import re
import resource

from ..memory import format_bytes

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
    "t": 2**40,
    "tb": 10**12,
    "tib": 2**40,
}
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "cannot allocate memory", "std::bad_alloc")


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"500M"``, ``"1.5 GB"`` or a plain byte count as bytes
    (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB of 1000).

    Raises:
        ValueError: not a positive size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: use a number of bytes or one with a unit, e.g. 8GiB, 500MiB, 2G")
    unit = match.group(2).lower()
    if unit not in _UNITS:
        units = "K, M, G, T, KiB, MiB, GiB, TiB, KB, MB, GB, TB"
        raise ValueError(
            f"{text!r} is not a size this reads: its unit {match.group(2)!r} is none of {units} (or none for bytes)"
        )
    value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return value


def apply_memory_limit(nbytes: int) -> None:
    """Lower this process's address-space limit (``RLIMIT_AS``) to ``nbytes``.

    Raises:
        ValueError: ``nbytes`` is below what the process already maps, or above
            a hard limit it may not raise.
    """
    mapped = (process_memory() or (0, 0))[0]
    if nbytes <= mapped:
        raise ValueError(
            f"a memory limit of {format_bytes(nbytes, 'GiB')} is below the {format_bytes(mapped, 'GiB')} this process "
            f"already maps (the interpreter and libraries): give more"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and nbytes > hard:
        raise ValueError(
            f"a memory limit of {format_bytes(nbytes, 'GiB')} is above this process's hard limit "
            f"{format_bytes(hard, 'GiB')}"
        )
    resource.setrlimit(resource.RLIMIT_AS, (nbytes, hard))


def process_memory() -> tuple[int, int] | None:
    """``(mapped, resident)`` bytes of this process now (Linux ``/proc``), or ``None`` where unknown."""
    try:
        with open("/proc/self/statm") as file:
            mapped, resident = file.read().split()[:2]
        page = os.sysconf("SC_PAGE_SIZE")
        return int(mapped) * page, int(resident) * page
    except (OSError, ValueError):
        return None


# what the resident set may grow by between the reset and reading it back
_RESET_SLACK = 4 * 2**20


def restart_peak_resident() -> bool:
    """Restart this process's peak resident set (Linux ``VmHWM``) from what it
    holds now (``/proc/self/clear_refs``), so that :func:`peak_resident`
    leaves out what came before (building or loading the data); ``False``
    where the system offers no such reset or ignores it (some sandboxes accept
    the write and keep the old peak: a reset that took leaves the peak within
    :data:`_RESET_SLACK` of what is resident now)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    peak, resident = _status_bytes("VmHWM"), _status_bytes("VmRSS")
    return peak is not None and resident is not None and peak <= resident + _RESET_SLACK


def peak_resident() -> int | None:
    """Peak resident bytes of this process since it started or since
    :func:`restart_peak_resident` (Linux ``VmHWM``), or ``None`` where unknown."""
    return _status_bytes("VmHWM")


def peak_address_space() -> int | None:
    """Peak bytes of address space this process has mapped in its life
    (Linux ``VmPeak``), what ``--memory-limit`` counts, or ``None`` where unknown."""
    return _status_bytes("VmPeak")


def _status_bytes(field: str) -> int | None:
    """The ``field`` line of ``/proc/self/status`` (given in kB) in bytes, or ``None`` where unknown."""
    try:
        with open("/proc/self/status") as file:
            line = next(line for line in file if line.startswith(f"{field}:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (Python's, torch's CPU or CUDA allocator's)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OUT_OF_MEMORY)


def out_of_memory_message(error: BaseException) -> str:
    """One line for an allocation failure: under which limit (this process's
    ``RLIMIT_AS``, if set), and how much it asked for."""
    text = str(error)
    wanted = re.search(r"tried to allocate ([0-9]+) bytes", text)
    if wanted:
        detail = f"allocating {format_bytes(int(wanted.group(1)), 'GiB')} more failed"
    else:
        detail = (text.strip().splitlines() or [type(error).__name__])[0]
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    where = (
        "(the machine's memory)"
        if limit == resource.RLIM_INFINITY
        else f"under the limit of {format_bytes(limit, 'GiB')}"
    )
    return f"out of memory {where}: {detail}"
