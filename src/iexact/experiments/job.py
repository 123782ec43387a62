r"""One experiment as a job: what ``iexact train`` runs, and each child of ``iexact bench train``.

:func:`run_job` is the run sequence, written once: the memory limit (a
missing synthetic cache built first in a process of its own, outside it),
the estimate of what the run needs against what the machine has, the data
loaded, the settings checked against it, then
:func:`~iexact.experiments.experiment.run_experiment`, in a ``torchrun`` job
on every rank.

``python -m iexact.experiments.job JOB.json RESULT.json`` reads a
:class:`Job` (:meth:`Job.to_dict`), runs it, and writes the result record
atomically (:func:`main`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable

import torch

from . import distributed
from .data import load_prepared, num_classes, synthetic_cache
from .distributed import Ranks
from .errors import UsageError
from .estimate import NotEnoughMemory, check_fits, least_bytes
from .experiment import run_experiment
from .files import write_json_atomically
from .limits import apply_memory_limit, is_out_of_memory, out_of_memory_message
from .models import REFERENCE, build_model
from .progress import Progress
from .settings import Settings
from .train import TrainingFailed
from .validation import DatasetError

OUT_OF_MEMORY = 3  # the exit status of a job that ran out of memory (its result says where)
DIVERGED = 4  # the exit status of a job whose training failed, diverged say (its result says where)
INTERRUPTED = 130  # the exit status of a job stopped by Ctrl-C (SIGINT): no result


@dataclasses.dataclass(frozen=True)
class Job:
    """An experiment and how to run it: ``epochs`` x ``runs`` of ``settings`` on
    ``device``, its data under ``root`` (never downloaded when ``offline``),
    under an address-space ``memory_limit`` in bytes (``None``: none), with
    ``threads`` torch CPU threads (``None``: torch's choice), checkpointed to
    ``checkpoint`` at the end of every run and every ``save_every`` epochs,
    continued from it with ``resume``. With ``only_run`` :math:`r`, run
    :math:`r` of the ``runs`` alone (``iexact bench train`` runs each run
    in a process of its own, the configurations alternating; not with a
    checkpoint)."""

    settings: Settings
    epochs: int
    runs: int = 1
    device: str = "cpu"
    root: str = "data"
    offline: bool = False
    quiet: bool = False
    memory_limit: int | None = None
    threads: int | None = None
    checkpoint: str | None = None
    save_every: int = 0
    resume: bool = False
    only_run: int | None = None

    def __post_init__(self) -> None:
        if self.only_run is not None and not 0 <= self.only_run < self.runs:
            raise ValueError(f"only_run={self.only_run} is invalid: a run in [0, {self.runs})")
        if self.only_run is not None and self.checkpoint is not None:
            raise ValueError("only_run trains one run of several: it takes no checkpoint")

    def to_dict(self) -> dict:
        """The job as plain JSON values."""
        return {**dataclasses.asdict(self), "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, record: dict) -> Job:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**record, "settings": Settings.from_dict(record["settings"])})


def run_job(job: Job, ranks: Ranks | None = None, announce: Callable[[object], None] | None = None) -> dict | None:
    """Run ``job`` (on this rank of a ``torchrun`` job with ``ranks``) and return
    its record (``None`` on ranks other than 0). ``announce(data)`` is called
    on rank 0 once the data is loaded and checked.

    Raises:
        UsageError: settings the data or the memory limit cannot take (before training).
        NotEnoughMemory: the run needs more than the machine has (before loading).
        DatasetError: a dataset that cannot be loaded, or a cache that cannot be built.
    """
    main = ranks is None or ranks.is_main
    settings, device = job.settings, torch.device(job.device)
    if job.memory_limit is not None:
        if main:
            _prepare_outside_limit(job)
        try:
            apply_memory_limit(job.memory_limit)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if job.threads:
        torch.set_num_threads(job.threads)
    data = load_data(job, ranks)
    if main and announce is not None:
        announce(data)
    progress = Progress(settings.label, job.epochs, job.runs, enabled=main and not job.quiet)
    if ranks is not None:
        distributed.start(ranks, device)
    try:
        runs, first = (job.runs, 0) if job.only_run is None else (job.only_run + 1, job.only_run)
        return run_experiment(
            settings, data, device, job.epochs, runs, job.checkpoint, job.save_every, job.resume, progress, ranks, first
        )
    finally:
        distributed.stop()


def load_data(
    job: Job, ranks: Ranks | None = None, fp32: bool = False, hints: list[str] | None = None, data_only: bool = False
):
    """The job's data on its device, after the estimate of what the run needs
    (:func:`~iexact.experiments.estimate.check_fits`; with ``fp32``, of the
    run uncompressed, suggesting ``hints``; with ``data_only``, of the data
    alone, for a process that trains nothing itself), checked against the
    settings (:func:`check_work`).

    Raises:
        UsageError: an unknown or malformed dataset name, or settings the data cannot take.
        NotEnoughMemory: the run needs more than the machine has (before loading).
    """
    settings = job.settings
    try:
        parts = least_bytes(
            settings.dataset,
            settings.model,
            settings.hidden,
            settings.layers,
            data_only or (settings.kind.compressed and not fp32),
            settings.batching is None and not data_only,
            settings.graph,
            job.root,
            settings.seed,
        )
        check_fits(parts, f"{settings.dataset} with {settings.model}, config {settings.label}", hints)
        data = load_prepared(settings.dataset, job.root, not job.offline, settings.seed, settings.graph)
    except ValueError as error:  # an unknown or malformed dataset name
        raise UsageError(str(error)) from None
    data = data.to(torch.device(job.device))
    check_work(settings, data, ranks)
    return data


def check_work(settings: Settings, data, ranks: Ranks | None = None) -> None:
    """Refuse, before anything trains, a model size the model cannot take, a
    fanout that does not match the model's layers, mini-batches on a graph
    layout they cannot sample, and training nodes too few to share among the
    ranks.

    Raises:
        UsageError: the problem, named.
    """
    try:
        model = build_model(
            settings.model, data.num_features, num_classes(data), settings.layers, settings.hidden, settings.dropout
        )
        normalized = any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in model.modules())
        if settings.batching is not None and settings.batching.batch_size < 2 and normalized:
            raise ValueError(
                f"--batch-size {settings.batching.batch_size} makes batches of one node, and {settings.model}'s "
                f"batch normalization needs 2 or more in training: use --batch-size 2 or more"
            )
        if settings.batching is not None and settings.graph != "edge_index":
            raise ValueError(
                f"--graph {settings.graph} trains full batch: PyG's loaders sample an edge_index; "
                f"drop --batch-size or --graph"
            )
        if settings.batching is not None:
            settings.batching.check_layers(settings.layers or REFERENCE[settings.model].layers)
        if ranks is not None:
            distributed.train_share(data.train_mask, ranks)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _prepare_outside_limit(job: Job) -> None:
    r"""Build a synthetic graph that is cached and not built yet in a child
    process without the memory limit: building ``synthetic-products`` takes
    14 GiB, loading its cache what the tensors hold, and the limit is on
    training. The child's peak stays out of this process's address space."""
    settings = job.settings
    try:
        path = synthetic_cache(settings.dataset, job.root, settings.seed, settings.graph)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if path is None or path.is_file():
        return
    print(
        f"building {settings.dataset} once, in a process of its own outside the memory limit (cached at {path})",
        flush=True,
    )
    command = [
        sys.executable,
        "-m",
        "iexact",
        "datasets",
        "--prepare",
        settings.dataset,
        "--root",
        str(job.root),
        "--seed",
        str(settings.seed),
        "--graph",
        settings.graph,
    ]
    command += ["--threads", str(job.threads)] if job.threads else []
    if subprocess.run(command, check=False).returncode != 0:
        raise DatasetError(f"building {settings.dataset} failed (its error is above); nothing was trained")


def main(argv: list[str] | None = None) -> int:
    """Run the job file ``argv[0]`` and write its record to ``argv[1]``; an
    allocation failure writes ``{"out_of_memory": message, "memory_limit":
    bytes}`` and exits with :data:`OUT_OF_MEMORY`, a failed training (diverged,
    a batch too small) ``{"failed": message}`` with :data:`DIVERGED`; Ctrl-C
    exits with 130 and writes nothing (the parent says what was kept)."""
    job_path, result_path = sys.argv[1:] if argv is None else argv
    with open(job_path) as file:
        job = Job.from_dict(json.load(file))
    status = 0
    try:
        record = run_job(job)
    except KeyboardInterrupt:
        return INTERRUPTED
    except TrainingFailed as error:
        record, status = {"failed": str(error)}, DIVERGED
    except NotEnoughMemory as error:
        record, status = {"out_of_memory": str(error), "memory_limit": job.memory_limit}, OUT_OF_MEMORY
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        record, status = (
            {"out_of_memory": out_of_memory_message(error), "memory_limit": job.memory_limit},
            OUT_OF_MEMORY,
        )
    write_json_atomically(result_path, record)
    return status


if __name__ == "__main__":
    sys.exit(main())
