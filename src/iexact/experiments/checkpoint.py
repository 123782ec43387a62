r"""Training checkpoints: written atomically, validated when read.

A checkpoint holds the model and optimizer states, torch's RNG states, the
current run's :class:`~iexact.experiments.train.TrainingState`, the results of finished
runs and the settings that produced them. Resuming restores all of it, so a
resumed run ends exactly where an uninterrupted one with the same seed does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .files import write_atomically
from .settings import Settings

FORMAT = "iexact-checkpoint"
VERSION = 5  # 2: the compressed modules' seed streams are saved; 3: as [key, counter] tensors; 4: epochs per run;
# 5: the settings name their run's kind and label, and their configs carry a version
READABLE = (4, 5)  # version 4's settings are upgraded by Settings.from_dict

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
_RUN_FIELDS = {
    "run": int,
    "seed": int,
    "epochs": int,
    "best_epoch": int,
    "val_accuracy": float,
    "test_accuracy": float,
    "epoch_seconds": list,
    "val_history": list,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: unreadable, foreign or made with other settings."""


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


def save_checkpoint(path: str | Path, settings: Settings, payload: dict) -> None:
    """Write ``payload`` (model, optimizer, state, ...) with ``settings`` and the RNG states."""
    record = {"format": FORMAT, "version": VERSION, "settings": settings.to_dict(), "rng": rng_states(), **payload}
    write_atomically(path, lambda file: torch.save(record, file))


def load_checkpoint(path: str | Path, settings: Settings) -> dict:
    """Read a checkpoint and check it was made with ``settings``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: unreadable or not an iexact checkpoint, another
            format version, a field missing or of the wrong type (named), or
            settings that differ (each difference named).
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
    if record.get("version") not in READABLE:
        raise CheckpointError(
            f"checkpoint {path} has format version {record.get('version')}, this iexact reads versions "
            f"{', '.join(map(str, READABLE))}"
        )
    _check_fields(record, path)
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


def _kind_error(path: Path, field: str, value, kind: type) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is damaged: its field {field!r} holds {type(value).__name__} where {kind.__name__} belongs"
    )


def _check_fields(record: dict, path: Path) -> None:
    """Every field a resume reads is there with its type; the runs finished are as many as ``run``."""
    for field, kind in _FIELDS.items():
        if field not in record:
            raise CheckpointError(f"checkpoint {path} is damaged: it has no field {field!r}")
        if not isinstance(record[field], kind) or isinstance(record[field], bool):
            raise _kind_error(path, field, record[field], kind)
    if record["run"] < 0 or record["run"] != len(record["finished"]):
        raise CheckpointError(
            f"checkpoint {path} is damaged: its field 'run' is {record['run']} but it holds "
            f"{len(record['finished'])} finished runs"
        )
    for index, run in enumerate(record["finished"]):
        if not isinstance(run, dict):
            raise _kind_error(path, f"finished[{index}]", run, dict)
        for field, kind in _RUN_FIELDS.items():
            value = run.get(field)
            if not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
                raise CheckpointError(
                    f"checkpoint {path} is damaged: finished run {index + 1} has no valid "
                    f"field {field!r} (a {kind.__name__})"
                )
    if not isinstance(record["rng"].get("cpu"), torch.Tensor):
        raise CheckpointError(f"checkpoint {path} is damaged: its field 'rng' has no CPU generator state")
    if not all(isinstance(state, torch.Tensor) for state in record["seed_streams"]):
        raise CheckpointError(f"checkpoint {path} is damaged: its field 'seed_streams' holds non-tensors")
