r"""One training experiment: dataset × model × config, several runs, one result record.

Behind ``iexact train`` and ``iexact bench``: :func:`run_experiment` trains the
runs (each a :class:`_Run`: its model, optimizer, loader and the callbacks
the training loop calls), checkpointing and resuming as asked, then measures
(:mod:`~iexact.experiments.measure`) and returns the record
(:mod:`~iexact.experiments.records`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from ..analysis import calibrate_, calibration_state, load_calibration_state_
from ..nn import seed_streams
from . import distributed
from .batching import Batching, make_loader, set_epoch
from .checkpoint import CheckpointError, load_checkpoint, restore_rng_states, save_checkpoint
from .data import graph_of
from .distributed import Ranks
from .limits import is_out_of_memory, out_of_memory_message, peak_address_space, process_memory
from .measure import (
    measure_gradient_error,
    measure_memory,
    memory_floor,
    memory_parts,
    peak_memory,
    restart_peak_memory,
    sample_batch,
    storage_bytes,
)
from .models import hidden_width, prepare_model
from .precision import StepPrecision
from .records import result_record
from .settings import Settings
from .train import TrainingFailed, TrainingState, train_epochs


def run_experiment(
    settings: Settings,
    data,
    device: torch.device,
    epochs: int,
    runs: int,
    checkpoint: str | Path | None = None,
    save_every: int = 0,
    resume: bool = False,
    after_epoch: Callable[[int, TrainingState], None] | None = None,
    ranks: Ranks | None = None,
    first_run: int = 0,
) -> dict | None:
    r"""Train runs ``first_run`` to ``runs - 1`` of ``epochs`` epochs (run
    :math:`r` seeded with ``settings.seed + r``) and return the result
    record. The gradient error at initialization (of ``settings.seed``'s
    model, whatever the runs) is measured with run 0 only.

    With ``checkpoint``, the state is saved atomically at the end of every run
    and, with ``save_every``, every ``save_every`` epochs; ``resume`` continues
    from ``checkpoint`` (same settings required; ``epochs`` and ``runs`` may
    grow). ``after_epoch(run, state)`` is called after every epoch.

    With ``ranks`` (a process of a ``torchrun`` job whose process group is
    started, see :mod:`~iexact.experiments.distributed`) the model is trained
    in ``DistributedDataParallel`` on this rank's share of the training
    nodes; rank 0 alone measures, writes checkpoints, calls ``after_epoch``
    and returns the record (the others return ``None``).
    """
    main = ranks is None or ranks.is_main
    held_before = process_memory() if device.type == "cpu" else None
    saved = _resume_point(checkpoint, settings, epochs, runs) if resume else None
    finished: list[dict] = [] if saved is None else list(saved["finished"])
    start_run = first_run if saved is None else saved["run"]
    restarted = restart_peak_memory(device)
    last = None
    for run in range(start_run, runs):
        last = _Run(settings, data, device, run, epochs, checkpoint, save_every, finished, ranks)
        state = last.train(saved if saved is not None and run == saved["run"] else None, after_epoch if main else None)
        finished.append(last.entry(state))
    if not main:
        return None
    record = _measured_record(settings, data, device, epochs, finished, restarted, ranks, first_run == 0)
    mapped = None if held_before is None or record["peak_address_space"] is None else held_before[0]
    record["memory_floor"] = None if mapped is None else memory_floor(data, hidden_width(settings), mapped)
    if last is not None:
        dataset = storage_bytes(data[key] for key in data.keys())
        runtime = 0 if held_before is None else max(held_before[1] - dataset, 0)
        record["memory_parts"] = memory_parts(
            data,
            last.model,
            last.optimizer,
            record["activation_memory"]["total"],
            record["peak_memory"]["bytes"],
            runtime,
        )
    return record


def _resume_point(checkpoint, settings: Settings, epochs: int, runs: int) -> dict:
    """The checkpoint to resume from, checked against ``settings`` and the runs asked for."""
    saved = load_checkpoint(checkpoint, settings)
    _check_growth(checkpoint, saved, epochs, runs)
    return saved


def _measured_record(settings: Settings, data, device, epochs, finished, restarted: bool, ranks, gradient) -> dict:
    """The record of the finished runs, with the measurements taken after training:
    peak memory first (the measurements allocate), then the activation memory
    (``torch.profiler``'s allocator count leaves buffers the process keeps), then,
    with ``gradient``, the gradient error (it runs the FP32 model too, which may not fit)."""
    peak = peak_memory(device, restarted)
    address_space = peak_address_space() if device.type == "cpu" else None  # CUDA maps device memory too
    memory = measure_memory(settings, data, device)
    record = result_record(settings, device, epochs, finished, memory, peak)
    record["peak_address_space"] = address_space
    record["world_size"] = 1 if ranks is None else ranks.world_size
    if ranks is not None:  # per run, the ranks' largest parameter difference after each epoch
        record["rank_spread"] = [run.get("rank_spread", []) for run in finished]
    if not gradient:
        return record
    try:
        record["gradient_error"] = measure_gradient_error(settings, data, device)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        record["gradient_error"] = {"out_of_memory": out_of_memory_message(error)}
    return record


class _Run:
    """Run ``run`` of an experiment: its model, optimizer and loader, and the
    callbacks :func:`~iexact.experiments.train.train_epochs` calls around each
    epoch (calibration, per-rank seeding, checkpoints, progress)."""

    def __init__(
        self,
        settings: Settings,
        data,
        device,
        run: int,
        epochs: int,
        checkpoint,
        save_every: int,
        finished: list[dict],
        ranks: Ranks | None,
    ):
        self.settings, self.data, self.device, self.run, self.epochs = settings, data, device, run, epochs
        self.checkpoint, self.save_every, self.finished, self.ranks = checkpoint, save_every, finished, ranks
        torch.manual_seed(settings.seed + run)
        self.model = prepare_model(settings, data, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.precision = StepPrecision(settings.precision, device)
        shards = None if ranks is None else ranks.shards
        self.loader = (
            None
            if settings.batching is None
            else make_loader(data, settings.batching, shards, seed=settings.seed + run)
        )
        calibrated = settings.config is not None and settings.config.levels == "calibrated"
        self.calibrate_at = calibration_epoch(settings.batching) if calibrated else -1

    def train(self, saved: dict | None, after_epoch) -> TrainingState:
        """Train from scratch, or from the ``saved`` checkpoint record of this run."""
        state = TrainingState()
        if saved is not None:
            state = _restore(self.checkpoint, saved, self.model, self.optimizer)
            self.precision.load_state_dict(saved.get("scaler", {}))
        trained, rows = self.model, None
        if self.ranks is not None:
            distributed.key_seed_streams(self.model, self.ranks.rank)
            trained = distributed.wrap(self.model, self.device)
            rows = None if self.loader is not None else distributed.train_share(self.data.train_mask, self.ranks)
        main = self.ranks is None or self.ranks.is_main

        def after(state: TrainingState) -> None:
            if main and self.checkpoint is not None and self._saves_after(state.epoch):
                self.save(state)
            if after_epoch is not None:
                after_epoch(self.run, state)

        try:
            grad_clip = self.settings.grad_clip
            train_epochs(
                trained,
                self.optimizer,
                self.data,
                state,
                self.epochs,
                grad_clip,
                after,
                self.loader,
                rows,
                self.before_epoch,
                self.precision,
            )
        except TrainingFailed as error:
            kept = self.checkpoint is not None and Path(self.checkpoint).is_file()
            raise type(error)(
                f"run {self.run + 1} {error}" + (f"; {self.checkpoint} keeps the last state saved" if kept else "")
            ) from error
        return state

    def _saves_after(self, epoch: int) -> bool:
        return epoch == self.epochs or bool(self.save_every and epoch % self.save_every == 0)

    def before_epoch(self, state: TrainingState) -> None:
        if state.epoch == self.calibrate_at and not calibration_state(self.model):
            batch = sample_batch(self.settings, self.data, self.device)
            calibrate_(self.model, batch.x, graph_of(batch))
        if self.ranks is not None:
            seed = distributed.epoch_seed(self.settings.seed, self.run, state.epoch, self.ranks.rank)
            torch.manual_seed(seed)
        if self.loader is not None:
            set_epoch(self.loader, state.epoch)

    def save(self, state: TrainingState) -> None:
        """Checkpoint the run as it stands (rank 0's seed streams keep the
        single-process key, :func:`~iexact.experiments.distributed.rank_key`)."""
        payload = {
            "run": self.run,
            "finished": self.finished,
            "state": dataclasses.asdict(state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "seed_streams": [stream.get_state() for stream in seed_streams(self.model)],
            "levels": calibration_state(self.model),
            "scaler": self.precision.state_dict(),
        }
        save_checkpoint(self.checkpoint, self.settings, payload)

    def entry(self, state: TrainingState) -> dict:
        """What the record keeps of this run once it finished."""
        entry = {
            "run": self.run,
            "seed": self.settings.seed + self.run,
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "val_accuracy": state.best_val,
            "test_accuracy": state.test_at_best,
            "epoch_seconds": state.epoch_seconds,
            "val_history": state.val_history,
        }
        if self.ranks is not None:
            entry["rank_spread"] = state.rank_spread
        return entry


CALIBRATION_STEPS = 4  # full-batch steps before levels="calibrated" fits its levels (one epoch of batches)


def calibration_epoch(batching: Batching | None) -> int:
    """The epoch before which a ``levels="calibrated"`` model fits its levels
    (:func:`iexact.calibrate_` on one training batch): after
    :data:`CALIBRATION_STEPS` full-batch steps or one epoch of mini-batches.
    Fixed, whatever ``--epochs`` says, so that a resumed run calibrates where
    the uninterrupted one does; a run that ends before it keeps optimal levels."""
    return CALIBRATION_STEPS if batching is None else 1


def _check_growth(checkpoint, record: dict, epochs: int, runs: int) -> None:
    """Refuse a resume that would drop what the checkpoint holds: fewer runs than
    it has begun, or fewer epochs than one of its runs has trained."""
    begun = record["run"] + 1
    if runs < begun:
        raise CheckpointError(
            f"checkpoint {checkpoint} holds {begun} runs (finished or begun): --runs {runs} "
            f"would drop some; resume with --runs {begun} or more"
        )
    trained = max([run["epochs"] for run in record["finished"]] + [record["state"].get("epoch", 0)])
    if epochs < trained:
        raise CheckpointError(
            f"checkpoint {checkpoint} holds a run of {trained} epochs: --epochs {epochs} would "
            f"shorten it; resume with --epochs {trained} or more"
        )


def _restore(checkpoint, record: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainingState:
    """Load the checkpoint's model, optimizer, RNG and seed-stream states; the run's state.

    Raises:
        CheckpointError: a state that does not fit the model (the error named).
    """
    try:
        model.load_state_dict(record["model"])
        optimizer.load_state_dict(record["optimizer"])
        state = TrainingState(**record["state"])
        streams = seed_streams(model)
        if len(streams) != len(record["seed_streams"]):
            raise ValueError(f"{len(record['seed_streams'])} seed streams saved, the model has {len(streams)}")
        for stream, stream_state in zip(streams, record["seed_streams"], strict=True):
            stream.set_state(stream_state)
        load_calibration_state_(model, record.get("levels", {}))
        restore_rng_states(record["rng"])
    except (RuntimeError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit the model it was made for: {error}") from error
    return state
