r"""The GPU benchmark, in one run, for the day a GPU is lent: ``python benchmarks/gpu.py``.

Prints three Markdown tables, what a user choosing between iexact and EXACT needs:

1. **Codec round trip** on an activation of ``--rows`` x ``--width`` in
   ``--dtype`` (float32; ``bfloat16`` or ``float16`` as autocast's linear
   maps return them): compress and decompress times per preset (median of
   ``--repeats``, CUDA events on a GPU), kernels launched, and the round
   trip's GB/s (input bytes over compress + decompress) beside ``torch``'s
   own device copy of the same tensor (``out.copy_(x)``), the ceiling of a
   memory-bound kernel.
2. **Stages** of one compress and one decompress of the default and of the
   ``shared`` projection: every kernel (or op, on CPU) with its calls and
   time, from ``torch.profiler`` (device time on a GPU), so projection,
   scales and quantization show apart where they are apart.
3. **Training**, on each of ``--datasets`` (``NAME`` or ``NAME@csr`` for a
   CSR adjacency; by default a Cora-sized synthetic graph, synthetic-arxiv
   and synthetic-products in CSR on a GPU): FP32, ``torch.utils.checkpoint``
   around every layer and the presets of ``--configs``, ``--runs`` runs of
   ``--epochs`` epochs each in ``--precision``: epoch time (mean and spread
   of the runs' medians, the first epoch of each being warm-up), its ratio
   to FP32, peak memory (``torch.cuda.max_memory_allocated``), activation
   memory, test accuracy and, on a GPU, the host syncs of one training step
   (``torch.cuda.set_sync_debug_mode("warn")`` warnings counted).

``--device cpu`` runs the same code on the CPU with small defaults (a smoke
test: the suite runs it so that this script cannot rot; its numbers mean
nothing for a GPU, and its peak memory is the process's, cumulative over the
configurations).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import warnings
from functools import partial

import torch

from iexact import PRESETS, compress, decompress
from iexact.experiments.bench import where
from iexact.experiments.data import load_prepared
from iexact.experiments.experiment import run_experiment
from iexact.experiments.models import prepare_model
from iexact.experiments.precision import PRECISIONS, StepPrecision
from iexact.experiments.settings import RunKind, Settings
from iexact.experiments.train import labels_of, loss_function
from iexact.kernels import uses_triton
from iexact.memory import format_bytes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GPU_DATASETS = ("synthetic:2708,10556,1433,7", "synthetic-arxiv", "synthetic-products@csr")  # Cora-sized first


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call:
    CUDA events around each call on a GPU, the wall clock elsewhere."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            first = time.perf_counter()
            fn()
            times.append(time.perf_counter() - first)
    return statistics.median(times)


def _profiled(fn, device: torch.device):
    """``torch.profiler`` events of one call of ``fn`` (after a warm-up call)."""
    fn()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return profile.key_averages()


def launched(events, device: torch.device) -> list:
    """The events that run on the device: kernels on a GPU (their device time),
    on CPU the ``aten`` ops that do work (not views, allocations, or the ops
    that only call others)."""
    if device.type == "cuda":
        return [e for e in events if e.device_time_total > 0 and e.device_type == torch.autograd.DeviceType.CUDA]
    quiet = ("empty", "view", "slice", "as_strided", "alias", "detach", "reshape", "select", "lift_fresh", "t")
    return [
        e
        for e in events
        if e.key.startswith("aten::") and e.key.split("::")[1].split(".")[0] not in quiet and e.self_cpu_time_total > 0
    ]


def _event_seconds(event, device: torch.device) -> float:
    return (event.device_time_total if device.type == "cuda" else event.self_cpu_time_total) / 1e6


def round_trip_table(rows: int, width: int, repeats: int, device: torch.device, dtype: torch.dtype) -> str:
    x = torch.randn(rows, width, device=device, generator=torch.Generator(device).manual_seed(0)).to(dtype)
    out = torch.empty_like(x)
    gigabytes = x.nbytes / 1e9
    copy = timed(lambda: out.copy_(x), repeats, device)
    lines = [
        f"Round trip of a {rows:,} x {width} {str(dtype).removeprefix('torch.')} activation "
        f"({x.nbytes / 2**20:,.1f} MiB); {where()}; "
        f"{'Triton' if uses_triton(device) else 'PyTorch'} kernels; median of {repeats}",
        "",
        "| config | compress ms | launches | decompress ms | launches | round trip GB/s | vs torch copy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| torch copy_ | – | – | – | – | {gigabytes / copy:.2f} | 1.00× |",
    ]
    for name, config in PRESETS.items():
        packed = compress(x, config, seed=0, check=False)
        squeeze = partial(compress, x, config, seed=0, check=False)
        restore = partial(decompress, packed, out=out, check=False)
        seconds = [timed(squeeze, repeats, device), timed(restore, repeats, device)]
        calls = [sum(e.count for e in launched(_profiled(fn, device), device)) for fn in (squeeze, restore)]
        rate = gigabytes / sum(seconds)
        lines.append(
            f"| {name} | {1e3 * seconds[0]:.2f} | {calls[0]} | {1e3 * seconds[1]:.2f} | {calls[1]} | "
            f"{rate:.2f} | {rate / (gigabytes / copy):.2f}× |"
        )
    return "\n".join(lines)


def stages_table(rows: int, width: int, device: torch.device, dtype: torch.dtype) -> str:
    x = torch.randn(rows, width, device=device, generator=torch.Generator(device).manual_seed(0)).to(dtype)
    lines = [
        f"Stages of one compress and one decompress of the {rows:,} x {width} activation; {where()}; "
        f"{'device' if device.type == 'cuda' else 'CPU'} time per kernel (torch.profiler)",
        "",
        "| config | way | kernel | calls | µs |",
        "|---|---|---|---:|---:|",
    ]
    for name, config in (
        ("default", PRESETS["default"]),
        ("shared", dataclasses.replace(PRESETS["default"], projection="shared")),
    ):
        packed = compress(x, config, seed=0, check=False)
        for way, fn in (
            ("compress", partial(compress, x, config, seed=0, check=False)),
            ("decompress", partial(decompress, packed, check=False)),
        ):
            events = sorted(launched(_profiled(fn, device), device), key=lambda e: -_event_seconds(e, device))
            for event in events:
                micro = 1e6 * _event_seconds(event, device)
                lines.append(f"| {name} | {way} | `{event.key[:60]}` | {event.count} | {micro:.1f} |")
    return "\n".join(lines)


def step_syncs(settings: Settings, data, device: torch.device) -> int | None:
    """Host syncs of one training step (after a warm-up step) on a GPU, as
    ``torch.cuda.set_sync_debug_mode("warn")`` reports them, the finite check
    off; ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    if settings.config is not None:
        settings = dataclasses.replace(settings, config=dataclasses.replace(settings.config, check_finite=False))
    torch.manual_seed(0)
    model = prepare_model(settings, data, device)
    precision, labels = StepPrecision(settings.precision, device), labels_of(data)

    def train_step():
        with precision.forward():
            out = model(data.x, data.edge_index)
            loss = loss_function(out[data.train_mask], labels[data.train_mask])
        loss.backward()

    train_step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def training_rows(dataset: str, model: str, configs: list[str], epochs: int, runs: int, device, precision: str):
    """``(label, epoch seconds per run, record of run 0, syncs)`` per
    configuration, or ``(label, error)`` for one that fails (the stock modules
    have no bf16 CSR product, for one)."""
    name, _, layout = dataset.partition("@")
    data = load_prepared(name, layout=layout or "edge_index").to(device)
    menu = [("FP32", RunKind.FP32, None), ("torch.utils.checkpoint", RunKind.CHECKPOINTED, None)]
    menu += [(preset, RunKind.COMPRESSED, PRESETS[preset]) for preset in configs]
    for label, kind, config in menu:
        settings = Settings(name, model, kind, label, config, precision=precision, graph=layout or "edge_index")
        try:
            records = [
                run_experiment(dataclasses.replace(settings, seed=run), data, device, epochs, 1) for run in range(runs)
            ]
        except RuntimeError as error:
            yield label, str(error).splitlines()[0]
            continue
        yield label, ([r["epoch_seconds_median"] for r in records], records[0], step_syncs(settings, data, device))


def training_table(
    dataset: str, model: str, configs: list[str], epochs: int, runs: int, device: torch.device, precision: str
) -> str:
    lines = [
        f"{model} on {dataset}, full batch, {runs} runs of {epochs} epochs (the first of each warm-up), "
        f"precision {precision}; {where()}",
        "",
        "| config | epoch time | vs FP32 | peak memory | vs FP32 | activation memory | test accuracy "
        "| syncs per step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = None
    for label, result in training_rows(dataset, model, configs, epochs, runs, device, precision):
        if isinstance(result, str):
            lines.append(f"| {label} | fails: {result[:100]} | | | | | | |")
            continue
        seconds, record, syncs = result
        mean, spread = statistics.mean(seconds), statistics.pstdev(seconds)
        peak = record["peak_memory"]["bytes"]
        if label == "FP32":
            baseline = (mean, peak)
        ratios = ("–", "–") if baseline is None else (f"{mean / baseline[0]:.2f}×", f"{baseline[1] / peak:.1f}× less")
        lines.append(
            f"| {label} | {1e3 * mean:.1f} ± {1e3 * spread:.1f} ms | {ratios[0]} | {format_bytes(peak, 'MiB')} | "
            f"{ratios[1]} | {format_bytes(record['activation_memory']['total'], 'MiB')} | "
            f"{100 * record['test_accuracy']['mean']:.1f} % | {'–' if syncs is None else syncs} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    parser.add_argument("--rows", type=int, help="activation rows (default: 2,449,029 on CUDA, 4,096 on CPU)")
    parser.add_argument("--width", type=int, default=128, help="activation width (default: 128)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per entry (default: 10)")
    parser.add_argument(
        "--datasets",
        nargs="+",
        help=f"training datasets, NAME or NAME@csr (default: {' '.join(GPU_DATASETS)} on CUDA, synthetic on CPU)",
    )
    parser.add_argument("--model", default="sage", help="reference model (default: sage)")
    parser.add_argument("--configs", default="default", help="compressed presets beside FP32 (default: default)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default: 10)")
    parser.add_argument("--runs", type=int, help="runs per configuration (default: 3 on CUDA, 1 on CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="the round trip's input (default: float32)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="32", help="training's mixed precision, every row (default: 32)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; --device cpu runs it as a smoke test", file=sys.stderr)
        return 2
    on_gpu = device.type == "cuda"
    rows = args.rows or (2_449_029 if on_gpu else 4_096)
    datasets = args.datasets or (list(GPU_DATASETS) if on_gpu else ["synthetic"])
    configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in configs if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset {', '.join(unknown)}: choose from {', '.join(PRESETS)}")
    runs = args.runs or (3 if on_gpu else 1)
    print(round_trip_table(rows, args.width, args.repeats, device, DTYPES[args.dtype]))
    print()
    print(stages_table(rows, args.width, device, DTYPES[args.dtype]))
    for dataset in datasets:
        print()
        print(training_table(dataset, args.model, configs, args.epochs, runs, device, args.precision))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # this process's own: the profiler's log lines off
    sys.exit(main())
