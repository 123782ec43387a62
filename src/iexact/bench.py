"""Timing, tables and plots shared by the command line and the benchmark scripts."""
from __future__ import annotations

import time

import torch


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call,
    synchronizing CUDA around each call when it is in use."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.2f} MiB"


def markdown_table(records: list[dict]) -> str:
    """The side-by-side table of ``iexact bench``: one row per configuration,
    ratios against the FP32 row of the same run (if there is one)."""
    fp32 = next((r for r in records if r["config_name"] == "fp32"), None)
    lines = ["| config | test accuracy (%) | activation memory | vs FP32 | allocator's count | "
             "peak memory | epoch time | vs FP32 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for record in records:
        memory, seconds = record["activation_memory"], record["epoch_seconds_median"]
        accuracy = record["test_accuracy"]
        memory_ratio = time_ratio = "–"
        if fp32 is not None:
            measured = max(memory["allocator"], 1)
            memory_ratio = f"{fp32['activation_memory']['allocator'] / measured:.1f}× less"
            time_ratio = f"{seconds / fp32['epoch_seconds_median']:.2f}×"
        lines.append(
            f"| {record['label']} | {100 * accuracy['mean']:.1f} ± {100 * accuracy['std']:.1f} | "
            f"{mib(memory['total'])} | {memory_ratio} | {mib(memory['allocator'])} | "
            f"{mib(record['peak_memory']['bytes'])} | {1e3 * seconds:.1f} ms | {time_ratio} |")
    return "\n".join(lines)


def write_plots(records: list[dict], folder) -> list:
    """``accuracy_vs_memory.png`` and ``layer_memory.png`` in ``folder``; returns their paths.

    Raises:
        ImportError: matplotlib is missing (``pip install "iexact[plot]"``).
    """
    from pathlib import Path

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "iexact[plot]"') from None
    folder = Path(folder)
    figure, axes = plt.subplots(figsize=(6, 4))
    for record in records:
        memory = max(record["activation_memory"]["allocator"], 1) / 2**20
        axes.errorbar(memory, 100 * record["test_accuracy"]["mean"], yerr=100 * record["test_accuracy"]["std"],
                      fmt="o", capsize=3, label=record["label"])
    axes.set_xscale("log")
    axes.set_xlabel("activation memory (MiB, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{records[0]['model']} on {records[0]['dataset']}")
    axes.legend(fontsize=7)
    figure.tight_layout()
    scatter = folder / "accuracy_vs_memory.png"
    figure.savefig(scatter, dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 4))
    for position, record in enumerate(records):
        bottom = 0.0
        for layer in record["activation_memory"]["layers"]:
            height = (layer["compressed"] + layer["uncompressed"]) / 2**20
            axes.bar(position, height, bottom=bottom, color="C0" if layer["uncompressed"] == 0 else "C3",
                     edgecolor="white", linewidth=0.5)
            bottom += height
    axes.set_xticks(range(len(records)), [r["label"] for r in records], rotation=30, ha="right", fontsize=7)
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_ylabel("MiB kept for backward (symlog)")
    axes.set_title("per-layer activation memory (blue: compressed, red: uncompressed)", fontsize=9)
    figure.tight_layout()
    bars = folder / "layer_memory.png"
    figure.savefig(bars, dpi=120)
    plt.close(figure)
    return [scatter, bars]
