r"""The result record of an experiment: built from its runs, and told as text.

A record (a JSON-ready dict) holds the settings, best-validation test accuracy
per run with their mean and standard deviation, the validation histories,
activation memory (accounted and as the allocator sees it), peak memory and the
epoch times with their median; :func:`~iexact.experiments.experiment.run_experiment` adds
the gradient error, peak address space and where the peak goes.
"""

from __future__ import annotations

import statistics

import torch

from .. import __version__
from ..memory import format_bytes
from .settings import Settings


def result_record(
    settings: Settings, device, epochs: int, finished: list[dict], memory: dict, peak: tuple[int, str]
) -> dict:
    """The record of ``finished`` runs (their entries as ``run_experiment`` keeps
    them), with the activation ``memory`` of one step and the ``(bytes, kind)`` peak."""
    peak_bytes, peak_kind = peak
    return {
        "iexact": __version__,
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        **settings.to_dict(),
        "epochs": epochs,
        **run_summary(finished),
        "activation_memory": memory,
        "peak_memory": {"bytes": peak_bytes, "kind": peak_kind},
    }


def run_summary(finished: list[dict]) -> dict:
    """What a record says of its runs, from their entries (``test_accuracy``,
    ``val_accuracy``, ``val_history``, ``epoch_seconds``, ``epochs`` each): the
    count, the accuracies with their mean (and the test accuracies' standard
    deviation), the epoch times per run and their median, the first epoch of
    each run left out of it (warm-up: allocator, caches, lazy init)."""
    tests = [run["test_accuracy"] for run in finished]
    vals = [run["val_accuracy"] for run in finished]
    seconds = [s for run in finished for s in (run["epoch_seconds"][1:] or run["epoch_seconds"])]
    return {
        "runs": len(finished),
        "test_accuracy": {
            "mean": statistics.mean(tests),
            "std": statistics.pstdev(tests) if len(tests) > 1 else 0.0,
            "runs": tests,
        },
        "val_accuracy": {
            "mean": statistics.mean(vals),
            "runs": vals,
            "history": [run["val_history"] for run in finished],
        },
        "epoch_seconds": [run["epoch_seconds"] for run in finished],
        "epoch_seconds_median": statistics.median(seconds),
        "run_epochs": [run["epochs"] for run in finished],
    }


def run_entries(record: dict) -> list[dict]:
    """The entries of a record's runs, as :func:`run_summary` reads them (its inverse)."""
    return [
        {"test_accuracy": test, "val_accuracy": val, "val_history": history, "epoch_seconds": seconds, "epochs": epochs}
        for test, val, history, seconds, epochs in zip(
            record["test_accuracy"]["runs"],
            record["val_accuracy"]["runs"],
            record["val_accuracy"]["history"],
            record["epoch_seconds"],
            record["run_epochs"],
            strict=True,
        )
    ]


def _mib(nbytes: int) -> str:
    return format_bytes(nbytes, "MiB")


def _allocator_count(nbytes: int | None) -> str:
    if nbytes is None:
        return "allocator's count not measured: its profiler ran out of memory under the limit"
    return f"allocator's count {_mib(nbytes)}"


def _peak_line(record: dict) -> str:
    peak = record["peak_memory"]
    line = f"peak memory {_mib(peak['bytes'])} ({peak['kind']})"
    if "memory_parts" in record:
        line += ": " + ", ".join(f"{part.replace('_', ' ')} {_mib(n)}" for part, n in record["memory_parts"].items())
    if record.get("peak_address_space") is not None:
        space = format_bytes(record["peak_address_space"], "GiB")
        line += f"; peak address space {space} (what --memory-limit counts)"
    return line


def _floor_line(record: dict) -> list[str]:
    floor = record.get("memory_floor")
    if floor is None:
        return []
    parts = ", ".join(
        f"{label} {format_bytes(floor[part])}"
        for part, label in (("dataset", "dataset"), ("runtime", "runtime"), ("two_layer_tensors", "two N × hidden"))
    )
    ratio = record["peak_address_space"] / floor["total"]
    return [f"floor {format_bytes(floor['total'])} ({parts}); the peak address space is {ratio:.2f}× it"]


def _gradient_line(error: dict | None) -> list[str]:
    if error is None:
        return []
    if "out_of_memory" in error:
        return [f"gradient error not measured, its FP32 reference ran {error['out_of_memory']}"]
    return [f"gradient error at initialization {error['whole']:.3f} (relative to FP32, mean of {error['draws']} draws)"]


def describe(record: dict) -> str:
    """The record as the lines ``iexact train`` prints."""
    memory, accuracy, runs = record["activation_memory"], record["test_accuracy"], record["runs"]
    return "\n".join(
        [
            f"test accuracy {100 * accuracy['mean']:.2f} ± {100 * accuracy['std']:.2f} % "
            f"(best validation epoch, {runs} run{'s' if runs > 1 else ''})",
            f"activation memory {_mib(memory['total'])} (compressed {_mib(memory['compressed'])}, "
            f"uncompressed {_mib(memory['uncompressed'])}; {_allocator_count(memory['allocator'])})",
            _peak_line(record),
            *_floor_line(record),
            f"median epoch time {1e3 * record['epoch_seconds_median']:.1f} ms ({record['threads']} threads)",
            *_gradient_line(record["gradient_error"]),
        ]
    )
