r"""One experiment as a job file: what ``iexact bench train`` hands each child process.

``python -m iexact.experiments.job JOB.json RESULT.json`` reads the job (the
serialized :class:`~iexact.experiments.experiment.Settings` plus where and
how long to run), trains, and writes the result record atomically.
"""
from __future__ import annotations

import json
import sys

import torch

from .checkpoint import write_atomically
from .data import load_dataset
from .experiment import Settings, run_experiment
from .progress import Progress


def run_job(job: dict) -> dict:
    """Train the job's settings and return the record.

    ``job`` keys: ``settings`` (:meth:`Settings.to_dict`), ``epochs``, ``runs``,
    ``device``, ``root``, ``offline``, ``threads`` (or ``None``), ``quiet``.
    """
    settings = Settings.from_dict(job["settings"])
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    data = load_dataset(settings.dataset, job["root"], download=not job["offline"], seed=settings.seed).to(device)
    progress = Progress(settings.config_name, job["epochs"], job["runs"], enabled=not job.get("quiet", False))
    return run_experiment(settings, data, device, job["epochs"], job["runs"], after_epoch=progress)


def main(argv: list[str] | None = None) -> int:
    job_path, result_path = sys.argv[1:] if argv is None else argv
    with open(job_path) as file:
        record = run_job(json.load(file))
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(result_path, lambda file: file.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
