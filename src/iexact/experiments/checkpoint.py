r"""Training checkpoints: written atomically, proved whole and validated when read.

A checkpoint holds the model and optimizer states, torch's RNG states, the
current run's :class:`~iexact.experiments.train.TrainingState`, the results of finished
runs and the settings that produced them. Resuming restores all of it, so a
resumed run ends exactly where an uninterrupted one with the same seed does.

The file is one header line, ``iexact-checkpoint 6 sha256 <digest>``, then the
record as ``torch.save`` writes it: a byte changed anywhere after the header
no longer matches the digest, and the file is refused as damaged before
anything of it is used. Every field a resume reads is then checked for its
type and its range (epochs, runs, accuracies in [0, 1], histories as long as
the epochs they record). Formats 4 and 5 (iexact 0.1 and 0.2's first
checkpoints, plain ``torch.save`` files without a digest) are still read.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import TypeGuard

import torch

from ..seeds import SEED_LIMIT
from .files import write_atomically
from .settings import Settings

FORMAT = "iexact-checkpoint"
VERSION = 6  # 2: the compressed modules' seed streams are saved; 3: as [key, counter] tensors; 4: epochs per run;
# 5: the settings name their run's kind and label, and their configs carry a version; 6: a header with a digest
READABLE = (4, 5, 6)  # version 4's settings are upgraded by Settings.from_dict
UNDIGESTED = (4, 5)  # plain torch.save files, without the header line
MAGIC = FORMAT.encode()

_FIELDS = {
    "settings": dict,
    "rng": dict,
    "run": int,
    "finished": list,
    "state": dict,
    "model": dict,
    "optimizer": dict,
    "seed_streams": list,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, damaged, foreign or made with other settings."""


def rng_states() -> dict:
    """torch's CPU and CUDA generator states."""
    states: dict[str, torch.Tensor | list[torch.Tensor]] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_record(path: str | Path, record: dict) -> None:
    """Write ``record`` atomically as a checkpoint file: the header with the
    SHA-256 of the ``torch.save`` bytes that follow it."""
    buffer = io.BytesIO()
    torch.save(record, buffer)
    body = buffer.getvalue()
    header = f"{FORMAT} {VERSION} sha256 {hashlib.sha256(body).hexdigest()}\n".encode()
    write_atomically(path, lambda file: file.write(header + body))


def read_record(path: str | Path) -> dict:
    """The record of the checkpoint file at ``path``, its digest verified.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not an iexact checkpoint, a format this iexact does not
            read, or damaged (its bytes do not match its digest, or cannot be read).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    if data.startswith(MAGIC):
        header, _, body = data.partition(b"\n")
        fields = header.split()
        if len(fields) != 4 or fields[2] != b"sha256" or not fields[1].isdigit():
            raise CheckpointError(f"checkpoint {path} is damaged: its header line is malformed")
        if int(fields[1]) not in READABLE:
            raise _unreadable(path, int(fields[1]))
        if hashlib.sha256(body).hexdigest().encode() != fields[3]:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its content does not match the digest written with it "
                f"(the file changed after it was saved); resume from another checkpoint or start afresh"
            )
    else:
        body = data  # formats 4 and 5: a torch.save file without a digest
    try:
        record = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many kinds for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is damaged or not an iexact checkpoint: it cannot be read") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an iexact checkpoint")
    if record.get("version") not in READABLE:
        raise _unreadable(path, record.get("version"))
    if (body is data) != (record["version"] in UNDIGESTED):
        raise CheckpointError(f"checkpoint {path} is damaged: its header line does not match its content")
    return record


def _unreadable(path: Path, version) -> CheckpointError:
    newer = isinstance(version, int) and version > VERSION
    return CheckpointError(
        f"checkpoint {path} has format version {version}, this iexact reads versions "
        f"{', '.join(map(str, READABLE))}" + ("; upgrade iexact to read it" if newer else "")
    )


def save_checkpoint(path: str | Path, settings: Settings, payload: dict) -> None:
    """Write ``payload`` (model, optimizer, state, ...) with ``settings`` and the RNG states."""
    write_record(
        path, {"format": FORMAT, "version": VERSION, "settings": settings.to_dict(), "rng": rng_states(), **payload}
    )


def load_checkpoint(path: str | Path, settings: Settings) -> dict:
    """Read a checkpoint (:func:`read_record`), check every field a resume
    reads, and check it was made with ``settings``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable, damaged or not an iexact checkpoint, a field
            missing, of the wrong type or out of range (named), or settings
            that differ (each difference named).
    """
    record = read_record(path)
    _check_fields(record, Path(path))
    try:  # read as this version's settings: older records upgraded, absent settings their defaults
        saved = Settings.from_dict(record["settings"]).to_dict()
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {path} is damaged: its settings are invalid ({error})") from None
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
        for key, value in settings.to_dict().items()
        if saved.get(key) != value
    ]
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was made with other settings; resume with the same ones or "
            f"start afresh. Differences: " + "; ".join(differences)
        )
    return record


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged: {what}")


def _is_int(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fractions(value, count: int) -> bool:
    """A list of ``count`` numbers in [0, 1]."""
    return isinstance(value, list) and len(value) == count and all(_is_number(v) and 0 <= v <= 1 for v in value)


def _durations(value, count: int) -> bool:
    """A list of ``count`` finite numbers >= 0."""
    return (
        isinstance(value, list)
        and len(value) == count
        and all(_is_number(v) and math.isfinite(v) and v >= 0 for v in value)
    )


def _check_fields(record: dict, path: Path) -> None:
    """Every field a resume reads is there, of its type and in its range; the
    runs finished are as many as ``run``."""
    for field, kind in _FIELDS.items():
        if field not in record:
            raise _damaged(path, f"it has no field {field!r}")
        if not isinstance(record[field], kind) or isinstance(record[field], bool):
            raise _damaged(
                path, f"its field {field!r} holds {type(record[field]).__name__} where {kind.__name__} belongs"
            )
    if record["run"] < 0 or record["run"] != len(record["finished"]):
        raise _damaged(path, f"its field 'run' is {record['run']} but it holds {len(record['finished'])} finished runs")
    for index, run in enumerate(record["finished"]):
        _check_finished(run, index, path)
    _check_state(record["state"], path)
    if not isinstance(record["rng"].get("cpu"), torch.Tensor):
        raise _damaged(path, "its field 'rng' has no CPU generator state")
    if not all(isinstance(state, torch.Tensor) for state in record["seed_streams"]):
        raise _damaged(path, "its field 'seed_streams' holds non-tensors")
    if not _is_scaler_state(record.get("scaler", {})):  # absent before --precision, empty without fp16
        raise _damaged(path, "its field 'scaler' is no GradScaler state (a positive finite scale, a growth count)")


def _is_scaler_state(state) -> bool:
    """Whether ``state`` is ``torch.amp.GradScaler.state_dict()``'s, or empty (no scaler)."""
    if not isinstance(state, dict):
        return False
    if not state:
        return True
    scale, tracker = state.get("scale"), state.get("_growth_tracker")
    return (
        isinstance(scale, float)
        and math.isfinite(scale)
        and scale > 0
        and isinstance(tracker, int)
        and not isinstance(tracker, bool)
        and tracker >= 0
    )


def _first_wrong(**checks: bool) -> str | None:
    """The first field whose check failed, or ``None``."""
    return next((field for field, ok in checks.items() if not ok), None)


def _check_finished(run, index: int, path: Path) -> None:
    """A finished run: its index, seed, epochs (at least one), best epoch among
    them, accuracies in [0, 1], and one time and validation score per epoch."""
    where = f"finished run {index + 1}"
    if not isinstance(run, dict):
        raise _damaged(path, f"{where} holds {type(run).__name__} where dict belongs")
    epochs, seed, best_epoch = run.get("epochs"), run.get("seed"), run.get("best_epoch")
    if not _is_int(epochs) or epochs < 1:
        raise _damaged(path, f"{where} has no valid field 'epochs' (an integer >= 1)")
    wrong = _first_wrong(
        run=run.get("run") == index and _is_int(run.get("run")),
        seed=_is_int(seed) and 0 <= seed < SEED_LIMIT,
        best_epoch=_is_int(best_epoch) and 0 <= best_epoch < epochs,
        val_accuracy=_fractions([run.get("val_accuracy")], 1),
        test_accuracy=_fractions([run.get("test_accuracy")], 1),
        epoch_seconds=_durations(run.get("epoch_seconds"), epochs),
        val_history=_fractions(run.get("val_history"), epochs),
    )
    if wrong is not None:
        raise _damaged(path, f"{where} has no valid field {wrong!r} (for {epochs} epochs)")


def _check_state(state: dict, path: Path) -> None:
    """The current run's :class:`~iexact.experiments.train.TrainingState`: its
    epochs, best epoch and scores, one time and validation score per epoch."""
    epoch = state.get("epoch")
    if not _is_int(epoch) or epoch < 0:
        raise _damaged(path, "its field 'state.epoch' is not an integer >= 0")
    best_epoch, best_val = state.get("best_epoch"), state.get("best_val")
    wrong = _first_wrong(
        best_epoch=_is_int(best_epoch) and -1 <= best_epoch < max(epoch, 1) and (best_epoch >= 0) == (epoch > 0),
        best_val=_is_number(best_val) and (best_val == -1 or 0 <= best_val <= 1),
        test_at_best=_fractions([state.get("test_at_best")], 1),
        epoch_seconds=_durations(state.get("epoch_seconds"), epoch),
        val_history=_fractions(state.get("val_history"), epoch),
    )
    if wrong is not None:
        raise _damaged(path, f"its field 'state.{wrong}' is out of range or of the wrong type (for {epoch} epochs)")
