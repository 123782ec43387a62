r"""One training experiment: dataset × model × config, several runs, one result record.

Behind ``iexact train`` and ``iexact bench``. The record (a JSON-ready dict,
schema in the README) holds best-validation test accuracy per run and their
mean and standard deviation, activation memory (accounted and as the
allocator sees it), peak memory and the median epoch time.
"""
from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..analysis import gradient_error
from ..config import CompressionConfig
from ..memory import activation_memory, allocator_growth
from ..nn import compress_, seed_streams
from .checkpoint import load_checkpoint, restore_rng_states, save_checkpoint
from .data import num_classes
from .models import build_model, checkpoint_layers_
from .train import TrainingState, loss_function, train_epochs

FP32 = "fp32"
CHECKPOINTING = "checkpoint"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What an experiment trains: everything a resumed run must share with the original."""

    dataset: str
    model: str
    config_name: str
    config: CompressionConfig | None
    layers: int | None = None
    hidden: int | None = None
    dropout: float | None = None
    lr: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float | None = 0.5
    seed: int = 0

    def to_dict(self) -> dict:
        """The settings as plain JSON values (the config spelled out, ``None`` for
        FP32 and checkpointing), for checkpoints, records and child processes."""
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        record["config"] = None if self.config is None else self.config.to_dict()
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "Settings":
        """Inverse of :meth:`to_dict`."""
        config = record.get("config")
        return cls(**{**record, "config": None if config is None else CompressionConfig.from_dict(config)})


def prepare_model(settings: Settings, data, device: torch.device) -> torch.nn.Module:
    """The reference model on ``device``, compressed (or checkpointed) as ``settings`` say."""
    model = build_model(settings.model, data.num_features, num_classes(data), settings.layers,
                        settings.hidden, settings.dropout).to(device)
    if settings.config is not None:
        compress_(model, settings.config)
    elif settings.config_name == CHECKPOINTING:
        checkpoint_layers_(model)
    return model


def measure_memory(settings: Settings, data, device: torch.device) -> dict:
    """Activation memory of one training forward, without touching torch's RNG streams."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = prepare_model(settings, data, device)
        report = activation_memory(model, data.x, data.edge_index)
        grown = allocator_growth(model, data.x, data.edge_index)
    return {"total": report.total, "compressed": report.compressed, "uncompressed": report.uncompressed,
            "allocator": grown,
            "layers": [{"name": layer.name, "type": layer.kind, "compressed": layer.compressed,
                        "uncompressed": layer.uncompressed} for layer in report.layers]}


def measure_gradient_error(settings: Settings, data, device: torch.device, draws: int = 4) -> dict | None:
    """:func:`iexact.gradient_error` of the settings' config on the model as run 1
    initializes it (the training loss on the training nodes), without touching
    torch's RNG streams; ``None`` for FP32 and checkpointing. It runs the FP32
    model too, so it must come after the peak memory is read."""
    if settings.config is None:
        return None
    labels = data.y if data.y.dim() == 2 else data.y.view(-1)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        model = prepare_model(settings, data, device)
        error = gradient_error(model, data.x, data.edge_index, config=settings.config, draws=draws,
                               loss_fn=lambda out: loss_function(out[data.train_mask], labels[data.train_mask]))
    return {"whole": error.whole, "of_mean": error.of_mean, "draws": error.draws,
            "per_parameter": error.per_parameter}


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes and how they were measured: CUDA ``max_memory_allocated``, or
    this process's peak resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "cpu_peak_rss"


def run_experiment(settings: Settings, data, device: torch.device, epochs: int, runs: int,
                   checkpoint: str | Path | None = None, save_every: int = 0, resume: bool = False,
                   after_epoch: Callable[[int, TrainingState], None] | None = None) -> dict:
    r"""Train ``runs`` runs of ``epochs`` epochs (run :math:`r` seeded with
    ``settings.seed + r``) and return the result record.

    With ``checkpoint``, the state is saved atomically at the end of every run
    and, with ``save_every``, every ``save_every`` epochs; ``resume`` continues
    from ``checkpoint`` (same settings required; ``epochs`` and ``runs`` may
    grow). ``after_epoch(run, state)`` is called after every epoch.
    """
    identity = settings.to_dict()
    finished: list[dict] = []
    start_run, record = 0, None
    if resume:
        record = load_checkpoint(checkpoint, identity)
        finished, start_run = list(record["finished"]), record["run"]
    memory = measure_memory(settings, data, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for run in range(start_run, runs):
        torch.manual_seed(settings.seed + run)
        model = prepare_model(settings, data, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        state = TrainingState()
        if record is not None and run == record["run"]:
            model.load_state_dict(record["model"])
            optimizer.load_state_dict(record["optimizer"])
            state = TrainingState(**record["state"])
            restore_rng_states(record["rng"])
            for stream, stream_state in zip(seed_streams(model), record["seed_streams"]):
                stream.set_state(stream_state)

        def save(state: TrainingState, run=run, model=model, optimizer=optimizer) -> None:
            save_checkpoint(checkpoint, identity, {
                "run": run, "finished": finished, "state": dataclasses.asdict(state),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "seed_streams": [stream.get_state() for stream in seed_streams(model)]})

        def each_epoch(state: TrainingState, run=run, save=save) -> None:
            if checkpoint is not None and (state.epoch == epochs or (save_every and state.epoch % save_every == 0)):
                save(state)
            if after_epoch is not None:
                after_epoch(run, state)

        train_epochs(model, optimizer, data, state, epochs, settings.grad_clip, each_epoch)
        finished.append({"run": run, "seed": settings.seed + run, "best_epoch": state.best_epoch,
                         "val_accuracy": state.best_val, "test_accuracy": state.test_at_best,
                         "epoch_seconds": state.epoch_seconds, "val_history": state.val_history})
    record = _record(settings, device, epochs, runs, finished, memory)  # reads the peak memory first
    record["gradient_error"] = measure_gradient_error(settings, data, device)
    return record


def _record(settings: Settings, device, epochs: int, runs: int, finished: list[dict], memory: dict) -> dict:
    tests = [run["test_accuracy"] for run in finished]
    vals = [run["val_accuracy"] for run in finished]
    # the first epoch of each run is warm-up (allocator, caches, lazy init)
    seconds = [s for run in finished for s in (run["epoch_seconds"][1:] or run["epoch_seconds"])]
    peak, peak_kind = peak_memory(device)
    return {
        "iexact": __version__, "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        **settings.to_dict(), "epochs": epochs, "runs": runs,
        "test_accuracy": {"mean": statistics.mean(tests), "std": statistics.pstdev(tests) if runs > 1 else 0.0,
                          "runs": tests},
        "val_accuracy": {"mean": statistics.mean(vals), "runs": vals,
                         "history": [run["val_history"] for run in finished]},
        "activation_memory": memory,
        "peak_memory": {"bytes": peak, "kind": peak_kind},
        "epoch_seconds_median": statistics.median(seconds),
    }
