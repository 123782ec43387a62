r"""One experiment as a job file: what ``iexact bench train`` hands each child process.

``python -m iexact.experiments.job JOB.json RESULT.json`` reads the job (the
serialized :class:`~iexact.experiments.experiment.Settings` plus where and
how long to run), trains, and writes the result record atomically.
"""

from __future__ import annotations

import json
import sys

import torch

from .data import load_prepared
from .estimate import NotEnoughMemory, check_fits, least_bytes
from .experiment import Settings, run_experiment
from .files import write_json_atomically
from .limits import apply_memory_limit, is_out_of_memory, out_of_memory_message
from .progress import Progress
from .train import Diverged

OUT_OF_MEMORY = 3  # the exit status of a job that ran out of memory (its result says where)
DIVERGED = 4  # the exit status of a job whose training diverged (its result says where)


def run_job(job: dict) -> dict:
    """Train the job's settings and return the record.

    ``job`` keys: ``settings`` (:meth:`Settings.to_dict`), ``epochs``, ``runs``,
    ``device``, ``root``, ``offline``, ``threads`` (or ``None``), ``quiet``,
    ``memory_limit`` (bytes or ``None``: applied before anything is loaded).
    """
    if job.get("memory_limit"):
        apply_memory_limit(job["memory_limit"])
    settings = Settings.from_dict(job["settings"])
    check_fits(
        least_bytes(
            settings.dataset,
            settings.model,
            settings.hidden,
            settings.layers,
            settings.config is not None,
            settings.batching is None,
            settings.graph,
            job["root"],
            settings.seed,
        ),
        f"{settings.dataset} with {settings.model}, config {settings.config_name}",
    )
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    data = load_prepared(
        settings.dataset, job["root"], download=not job["offline"], seed=settings.seed, layout=settings.graph
    ).to(device)
    progress = Progress(settings.config_name, job["epochs"], job["runs"], enabled=not job.get("quiet", False))
    return run_experiment(settings, data, device, job["epochs"], job["runs"], after_epoch=progress)


def main(argv: list[str] | None = None) -> int:
    """Run the job; an allocation failure writes ``{"out_of_memory": message,
    "memory_limit": bytes}`` as the result and exits with :data:`OUT_OF_MEMORY`,
    a diverged training ``{"failed": message}`` with :data:`DIVERGED`."""
    job_path, result_path = sys.argv[1:] if argv is None else argv
    with open(job_path) as file:
        job = json.load(file)
    status = 0
    try:
        record = run_job(job)
    except Diverged as error:
        record, status = {"failed": str(error)}, DIVERGED
    except NotEnoughMemory as error:
        record, status = {"out_of_memory": str(error), "memory_limit": job.get("memory_limit")}, OUT_OF_MEMORY
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        record = {"out_of_memory": out_of_memory_message(error), "memory_limit": job.get("memory_limit")}
        status = OUT_OF_MEMORY
    write_json_atomically(result_path, record)
    return status


if __name__ == "__main__":
    sys.exit(main())
