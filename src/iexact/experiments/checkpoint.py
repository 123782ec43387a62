r"""Training checkpoints: written atomically, validated when read.

A checkpoint holds the model and optimizer states, torch's RNG states, the
current run's :class:`~iexact.experiments.train.TrainingState`, the results of finished
runs and the settings that produced them. Resuming restores all of it, so a
resumed run ends exactly where an uninterrupted one with the same seed does.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "iexact-checkpoint"
VERSION = 3  # 2: the compressed modules' seed streams are saved; 3: as [key, counter] tensors


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, foreign or made with other settings."""


def write_atomically(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, flush it
    to disk, then rename it over ``path``: readers see the old file or the new
    one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def rng_states() -> dict:
    """torch's CPU and CUDA generator states."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, settings: dict, payload: dict) -> None:
    """Write ``payload`` (model, optimizer, state, ...) with ``settings`` and the RNG states."""
    record = {"format": FORMAT, "version": VERSION, "settings": settings, "rng": rng_states(), **payload}
    write_atomically(path, lambda file: torch.save(record, file))


def load_checkpoint(path: str | Path, settings: dict) -> dict:
    """Read a checkpoint and check it was made with ``settings``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable or not an iexact checkpoint, another
            format version, or settings that differ (each difference named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (run without --resume to start afresh)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: {error}") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an iexact checkpoint")
    if record.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {record.get('version')}, "
                              f"this iexact reads version {VERSION}")
    saved = record["settings"]
    differences = [f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
                   for key, value in settings.items() if saved.get(key) != value]
    if differences:
        raise CheckpointError(f"checkpoint {path} was made with other settings; resume with the same ones or "
                              f"start afresh. Differences: " + "; ".join(differences))
    return record
