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
from collections.abc import Callable
from pathlib import Path

import torch

from .. import __version__
from ..analysis import calibrate_, calibration_state, gradient_error, load_calibration_state_
from ..config import CompressionConfig
from ..memory import activation_memory, allocator_growth
from ..nn import compress_, configure_, seed_streams
from . import distributed
from .batching import Batching, batch_loss_rows, make_loader, set_epoch
from .checkpoint import CheckpointError, load_checkpoint, restore_rng_states, save_checkpoint
from .data import graph_of, num_classes
from .distributed import Ranks
from .limits import (
    is_out_of_memory,
    out_of_memory_message,
    peak_address_space,
    peak_resident,
    process_memory,
    restart_peak_resident,
)
from .models import build_model, checkpoint_layers_, message_passing_layers
from .train import Diverged, TrainingState, labels_of, loss_function, train_epochs

FP32 = "fp32"
CHECKPOINTING = "checkpoint"
PLANNED = "plan"  # the config name of a run with an iexact plan's per-module configs


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
    batching: Batching | None = None  # None: full batch
    graph: str = "edge_index"  # or "csr" (data.with_layout)
    module_configs: tuple[tuple[str, CompressionConfig], ...] = ()  # a plan's configs, by module name

    def __post_init__(self) -> None:
        object.__setattr__(self, "module_configs", tuple(self.module_configs))

    def to_dict(self) -> dict:
        """The settings as plain JSON values (the config spelled out, ``None`` for
        FP32 and checkpointing), for checkpoints, records and child processes."""
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        record["config"] = None if self.config is None else self.config.to_dict()
        record["batching"] = None if self.batching is None else self.batching.to_dict()
        record["module_configs"] = {name: config.to_dict() for name, config in self.module_configs}
        return record

    @classmethod
    def from_dict(cls, record: dict) -> Settings:
        """Inverse of :meth:`to_dict`."""
        config = record.get("config")
        return cls(
            **{
                **record,
                "config": None if config is None else CompressionConfig.from_dict(config),
                "batching": Batching.from_dict(record.get("batching")),
                "module_configs": tuple(
                    (name, CompressionConfig.from_dict(module))
                    for name, module in record.get("module_configs", {}).items()
                ),
            }
        )


def prepare_model(settings: Settings, data, device: torch.device) -> torch.nn.Module:
    """The reference model on ``device``, compressed (or checkpointed) as ``settings`` say."""
    model = build_model(
        settings.model, data.num_features, num_classes(data), settings.layers, settings.hidden, settings.dropout
    ).to(device)
    if settings.batching is not None:
        settings.batching.check_layers(message_passing_layers(model))
    if settings.config is not None:
        configure_(compress_(model, settings.config), dict(settings.module_configs))
    elif settings.config_name == CHECKPOINTING:
        checkpoint_layers_(model)
    return model


def fork_rng(device: torch.device):
    """``torch.random.fork_rng`` of the CPU generator and ``device``'s."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def sample_batch(settings: Settings, data, device: torch.device):
    """What one training step sees: ``data`` itself in full batch, else the
    first batch of the settings' loader (drawn without touching torch's RNG streams)."""
    if settings.batching is None:
        return data
    with fork_rng(device):
        torch.manual_seed(settings.seed)
        return next(iter(make_loader(data, settings.batching))).to(device)


def measure_memory(settings: Settings, data, device: torch.device) -> dict:
    """Activation memory of one training forward (on one batch in mini-batch
    training), without touching torch's RNG streams."""
    batch = sample_batch(settings, data, device)
    with fork_rng(device):
        model = prepare_model(settings, data, device)
        report = activation_memory(model, batch.x, graph_of(batch))
        grown = allocator_growth(model, batch.x, graph_of(batch))
    return {
        "total": report.total,
        "compressed": report.compressed,
        "uncompressed": report.uncompressed,
        "allocator": grown,
        "layers": [
            {"name": layer.name, "type": layer.kind, "compressed": layer.compressed, "uncompressed": layer.uncompressed}
            for layer in report.layers
        ],
    }


def measure_gradient_error(settings: Settings, data, device: torch.device, draws: int = 4) -> dict | None:
    """:func:`iexact.gradient_error` of the settings' config on the model as run 1
    initializes it (the training loss on the training nodes), without touching
    torch's RNG streams; ``None`` for FP32 and checkpointing. It runs the FP32
    model too, so it must come after the peak memory is read."""
    if settings.config is None:
        return None
    batch = sample_batch(settings, data, device)
    labels = labels_of(batch)
    rows = batch.train_mask.nonzero().view(-1) if settings.batching is None else batch_loss_rows(batch)
    with fork_rng(device):
        torch.manual_seed(settings.seed)
        model = prepare_model(settings, data, device)
        error = gradient_error(
            model, batch.x, graph_of(batch), draws=draws, loss_fn=lambda out: loss_function(out[rows], labels[rows])
        )
    return {"whole": error.whole, "of_mean": error.of_mean, "draws": error.draws, "per_parameter": error.per_parameter}


def restart_peak_memory(device: torch.device) -> bool:
    """Start counting the peak afresh (before training, after the data is
    loaded): CUDA's peak statistics, or on CPU the peak resident set where
    Linux allows; ``False`` where the CPU peak cannot be restarted."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return restart_peak_resident()


def peak_memory(device: torch.device, restarted: bool = False) -> tuple[int, str]:
    """Peak bytes and how they were measured: CUDA ``max_memory_allocated``;
    on CPU the peak resident set since :func:`restart_peak_memory`
    (``cpu_peak_rss``) or, where it could not restart, the process's whole
    life's (``cpu_peak_rss_process``, loading the data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    since = peak_resident() if restarted else None
    if since is not None:
        return since, "cpu_peak_rss"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "cpu_peak_rss_process"


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a view counts once)."""
    storages = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.layout == torch.sparse_csr:
            for part in (tensor.crow_indices(), tensor.col_indices(), tensor.values()):
                storages[(part.device, part.untyped_storage().data_ptr())] = part.untyped_storage().nbytes()
        elif isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided:
            storage = tensor.untyped_storage()
            storages[(tensor.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def memory_parts(
    data, model: torch.nn.Module, optimizer: torch.optim.Optimizer, activations: int, peak: int, runtime: int = 0
) -> dict:
    """Where the peak memory goes, in bytes: the graph (``edge_index`` or
    ``adj_t``, and any other edge tensors), the node features, labels and masks, parameters,
    optimizer state, the activations kept for one step (as accounted),
    ``runtime`` (on CPU: what the process held before training beyond the
    dataset, i.e. the interpreter and libraries) and ``other``, the rest of
    the peak: autograd's temporaries (gathered messages, the loss's) and
    allocator caches."""
    edge_keys = [key for key in data.keys() if key.startswith("edge") or key.startswith("adj")]
    node_keys = [key for key in data.keys() if key not in edge_keys and key != "x"]
    parts = {
        "graph": _storage_bytes(data[key] for key in edge_keys),
        "features": _storage_bytes([data.x]),
        "labels_and_masks": _storage_bytes(data[key] for key in node_keys),
        "parameters": _storage_bytes(model.parameters()),
        "optimizer_state": _storage_bytes(value for state in optimizer.state.values() for value in state.values()),
        "activations": activations,
    }
    # the resident size read before training and the peak come from two counters (/proc and getrusage),
    # whose page accounting differs slightly: runtime is capped so that the parts add up to the peak
    parts["runtime"] = min(runtime, max(peak - sum(parts.values()), 0))
    parts["other"] = max(peak - sum(parts.values()), 0)
    return parts


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
) -> dict | None:
    r"""Train ``runs`` runs of ``epochs`` epochs (run :math:`r` seeded with
    ``settings.seed + r``) and return the result record.

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
    identity = settings.to_dict()
    finished: list[dict] = []
    start_run, record = 0, None
    if resume:
        record = load_checkpoint(checkpoint, identity)
        finished, start_run = list(record["finished"]), record["run"]
        _check_growth(checkpoint, record, epochs, runs)
    restarted = restart_peak_memory(device)
    shards = None if ranks is None else ranks.shards
    calibrated = settings.config is not None and settings.config.levels == "calibrated"
    calibrate_at = calibration_epoch(settings.batching) if calibrated else -1
    for run in range(start_run, runs):
        torch.manual_seed(settings.seed + run)
        model = prepare_model(settings, data, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        state = TrainingState()
        if record is not None and run == record["run"]:
            state = _restore(checkpoint, record, model, optimizer)
        trained = model
        if ranks is not None:
            distributed.key_seed_streams(model, ranks.rank)
            trained = distributed.wrap(model, device)
        loader = (
            None
            if settings.batching is None
            else make_loader(data, settings.batching, shards, seed=settings.seed + run)
        )
        train_rows = None if ranks is None or loader is not None else distributed.train_share(data.train_mask, ranks)

        def save(state: TrainingState, run=run, model=model, optimizer=optimizer) -> None:
            # rank 0's seed streams keep the single-process key (distributed.rank_key)
            save_checkpoint(
                checkpoint,
                identity,
                {
                    "run": run,
                    "finished": finished,
                    "state": dataclasses.asdict(state),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "seed_streams": [stream.get_state() for stream in seed_streams(model)],
                    "levels": calibration_state(model),
                },
            )

        def before_epoch(state: TrainingState, run=run, loader=loader, model=model) -> None:
            if state.epoch == calibrate_at and not calibration_state(model):
                batch = sample_batch(settings, data, device)
                calibrate_(model, batch.x, graph_of(batch))
            if ranks is not None:
                torch.manual_seed(distributed.epoch_seed(settings.seed, run, state.epoch, ranks.rank))
            if loader is not None:
                set_epoch(loader, state.epoch)

        def each_epoch(state: TrainingState, run=run, save=save) -> None:
            if not main:
                return
            if checkpoint is not None and (state.epoch == epochs or (save_every and state.epoch % save_every == 0)):
                save(state)
            if after_epoch is not None:
                after_epoch(run, state)

        try:
            train_epochs(
                trained,
                optimizer,
                data,
                state,
                epochs,
                settings.grad_clip,
                each_epoch,
                loader,
                train_rows,
                before_epoch,
            )
        except Diverged as error:
            raise Diverged(
                f"run {run + 1} {error}"
                + (
                    ""
                    if checkpoint is None or not Path(checkpoint).is_file()
                    else f"; {checkpoint} keeps the last state saved"
                )
            ) from error
        last = model, optimizer
        finished.append(
            {
                "run": run,
                "seed": settings.seed + run,
                "epochs": state.epoch,
                "best_epoch": state.best_epoch,
                "val_accuracy": state.best_val,
                "test_accuracy": state.test_at_best,
                "epoch_seconds": state.epoch_seconds,
                "val_history": state.val_history,
                **({} if ranks is None else {"rank_spread": state.rank_spread}),
            }
        )
    if not main:
        return None
    peak = peak_memory(device, restarted)
    address_space = peak_address_space() if device.type == "cpu" else None  # CUDA maps device memory too
    # measured after training: torch.profiler's allocator count leaves buffers the process keeps
    memory = measure_memory(settings, data, device)
    record = _record(settings, device, epochs, runs, finished, memory, peak)
    record["peak_address_space"] = address_space
    record["world_size"] = 1 if ranks is None else ranks.world_size
    if start_run < runs:
        dataset = _storage_bytes(data[key] for key in data.keys())
        runtime = 0 if held_before is None else max(held_before[1] - dataset, 0)
        record["memory_parts"] = memory_parts(data, *last, memory["total"], record["peak_memory"]["bytes"], runtime)
    if ranks is not None:  # per run, the ranks' largest parameter difference after each epoch
        record["rank_spread"] = [run.get("rank_spread", []) for run in finished]
    try:
        record["gradient_error"] = measure_gradient_error(settings, data, device)
    except (MemoryError, RuntimeError) as error:  # its FP32 reference may not fit where the run did
        if not is_out_of_memory(error):
            raise
        record["gradient_error"] = {"out_of_memory": out_of_memory_message(error)}
    return record


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


def _record(
    settings: Settings, device, epochs: int, runs: int, finished: list[dict], memory: dict, peak: tuple[int, str]
) -> dict:
    tests = [run["test_accuracy"] for run in finished]
    vals = [run["val_accuracy"] for run in finished]
    # the first epoch of each run is warm-up (allocator, caches, lazy init)
    seconds = [s for run in finished for s in (run["epoch_seconds"][1:] or run["epoch_seconds"])]
    peak, peak_kind = peak
    return {
        "iexact": __version__,
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        **settings.to_dict(),
        "epochs": epochs,
        "runs": runs,
        "test_accuracy": {
            "mean": statistics.mean(tests),
            "std": statistics.pstdev(tests) if runs > 1 else 0.0,
            "runs": tests,
        },
        "val_accuracy": {
            "mean": statistics.mean(vals),
            "runs": vals,
            "history": [run["val_history"] for run in finished],
        },
        "activation_memory": memory,
        "peak_memory": {"bytes": peak, "kind": peak_kind},
        "epoch_seconds_median": statistics.median(seconds),
        "run_epochs": [run["epochs"] for run in finished],
    }
