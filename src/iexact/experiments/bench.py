r"""The benchmark harness: every table in the README comes from here, through ``iexact bench``.

Three benchmarks, each FP32 beside the compressed configurations in one run:

- **codec**: one activation compressed with every preset (stored bytes, ratio,
  error, times) and, with ``sweep``, the round-trip throughput over bits x
  block size x levels against a straightforward PyTorch round trip.
- **memory**: bytes the stock GraphSAGE keeps for backward on a random
  ogbn-arxiv-shaped graph, accounted and as the allocator sees them.
- **train**: the reference models trained per configuration, each in a fresh
  process (its peak memory its own), with accuracy, activation memory, peak
  memory and epoch time as ratios to FP32; a table, JSON records and plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch

from ..codec import compress, decompress
from ..config import PRESETS, CompressionConfig
from ..memory import activation_memory, allocator_growth, format_bytes
from ..nn import compress_
from ..quant import rademacher
from .files import write_json_atomically
from .job import DIVERGED, OUT_OF_MEMORY, Job
from .records import run_entries, run_summary
from .settings import RunKind


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


def where() -> str:
    """The machine a timing was taken on: device name or CPU, and torch's thread count."""
    import platform

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else (platform.processor() or "CPU")
    return f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads"


# ---- codec ---------------------------------------------------------------------------------------


def preset_rows(x: torch.Tensor, repeats: int, seed: int) -> list[dict]:
    """Every preset on ``x``: stored bytes, ratio to float32, error variance, median times."""
    signal = x.pow(2).mean().item()
    out, rows = torch.empty_like(x), []
    for name, config in PRESETS.items():
        packed = compress(x, config, seed=seed)
        error = (decompress(packed) - x).pow(2).mean().item()
        rows.append(
            {
                "preset": name,
                "config": str(config),
                "bytes": packed.nbytes,
                "ratio": x.nbytes / packed.nbytes,
                "error_variance": error,
                "relative_error": error / signal,
                "compress_ms": 1e3 * median_seconds(partial(compress, x, config, seed=seed), repeats),
                "decompress_ms": 1e3 * median_seconds(partial(decompress, packed, out=out, check=False), repeats),
            }
        )
    return rows


def straightforward_round_trip(x: torch.Tensor, block_size: int = 1024, bits: int = 2, ratio: int = 8) -> torch.Tensor:
    """The obvious PyTorch round trip (float noise, one op per step, fresh tensors): the speed baseline."""
    top = 2**bits - 1
    k = math.ceil(x.shape[1] / ratio)
    projection, _ = rademacher(x.shape[1], k, 0, x.device)
    flat = (x @ projection).reshape(-1)
    pad = (-flat.numel()) % block_size
    blocks = torch.cat([flat, flat[-1:].expand(pad)]).view(-1, block_size)
    low, high = blocks.min(1).values, blocks.max(1).values
    scale = ((high - low) / top).clamp(min=1e-30)
    u = (blocks - low[:, None]) / scale[:, None]
    codes = torch.floor(u + torch.rand_like(u)).clamp(0, top).to(torch.uint8).view(-1, 8 // bits)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=x.device)
    packed = (codes << shifts).sum(1).to(torch.uint8)
    unpacked = ((packed[:, None] >> shifts) & top).view(-1, block_size).float()
    z = (unpacked * scale[:, None] + low[:, None]).view(-1)[: flat.numel()].view(x.shape[0], k)
    return z @ projection.t()


def throughput_rows(x: torch.Tensor, repeats: int) -> list[dict]:
    """Round-trip GB/s of float32 input over bits x block size x levels at projection 8,
    decompressing into a fresh tensor and into a reused one."""
    gigabytes, out, rows = x.nbytes / 1e9, torch.empty_like(x), []
    for bits in (1, 2, 4, 8):
        for block_size in ("row", 64, 128, 256, 1024):
            for levels in ("uniform", "optimal") if bits > 1 else ("uniform",):  # 1 bit: no interior level
                config = CompressionConfig(bits=bits, block_size=block_size, rp_ratio=8, levels=levels)
                packed = compress(x, config, seed=0)
                seconds = median_seconds(partial(compress, x, config, seed=0), repeats)
                fresh = median_seconds(partial(decompress, packed, check=False), repeats)
                reused = median_seconds(partial(decompress, packed, out=out, check=False), repeats)
                rows.append(
                    {
                        "bits": bits,
                        "block_size": block_size,
                        "levels": levels,
                        "compress_ms": 1e3 * seconds,
                        "decompress_ms": 1e3 * fresh,
                        "decompress_reused_ms": 1e3 * reused,
                        "gb_per_s": gigabytes / (seconds + fresh),
                        "gb_per_s_reused": gigabytes / (seconds + reused),
                    }
                )
    return rows


def codec_report(rows: int, width: int, repeats: int, seed: int, sweep: bool) -> str:
    """The codec benchmark as Markdown (presets; with ``sweep`` the throughput table too)."""
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    lines = [
        f"Activation {rows} x {width} float32 ({x.nbytes:,} bytes); {where()}; median of {repeats} runs",
        "",
        "| preset | config | stored bytes | vs FP32 | error variance | relative | compress ms | decompress ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in preset_rows(x, repeats, seed):
        lines.append(
            f"| {r['preset']} | {r['config']} | {r['bytes']:,} | {r['ratio']:.1f}x | "
            f"{r['error_variance']:.4f} | {r['relative_error']:.3f} | {r['compress_ms']:.1f} | "
            f"{r['decompress_ms']:.1f} |"
        )
    if sweep:
        baseline = median_seconds(lambda: straightforward_round_trip(x), repeats)
        lines += [
            "",
            f"straightforward PyTorch INT2 / projection 8 / blocks 1024: {x.nbytes / 1e9 / baseline:.2f} GB/s",
            "",
            "| bits | block | levels | compress ms | decompress ms (fresh / reused out) | GB/s fresh | "
            "GB/s reused out |",
            "|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in throughput_rows(x, repeats):
            lines.append(
                f"| {r['bits']} | {r['block_size']} | {r['levels']} | {r['compress_ms']:.1f} | "
                f"{r['decompress_ms']:.1f} / {r['decompress_reused_ms']:.1f} | {r['gb_per_s']:.2f} | "
                f"{r['gb_per_s_reused']:.2f} |"
            )
    return "\n".join(lines)


# ---- memory --------------------------------------------------------------------------------------


def memory_configs() -> dict[str, CompressionConfig | None]:
    """FP32, every preset, the default keeping dropout seeds (as it does off CPU), without
    ``rp_norm`` and with blocks of 64 and 256, by label."""
    configs: dict[str, CompressionConfig | None] = {"FP32": None}
    configs.update({name if name == "default" else f"{name}()": config for name, config in PRESETS.items()})
    configs['default, dropout_masks="seed"'] = dataclasses.replace(PRESETS["default"], dropout_masks="seed")
    configs["default, rp_norm=False"] = dataclasses.replace(PRESETS["default"], rp_norm=False)
    for block_size in (64, 256):
        configs[f"default, G={block_size}"] = dataclasses.replace(PRESETS["default"], block_size=block_size)
    return configs


def memory_report(nodes: int, edges: int, features: int, device: torch.device) -> str:
    r"""Activation memory of the stock ``GraphSAGE(features, 128, 3, 40, norm="batch",
    dropout=0.5)`` on a random graph (``edges`` random pairs made undirected), per
    configuration, with the ratio to FP32 and the allocator's count, as Markdown."""
    from torch_geometric.nn.models import GraphSAGE
    from torch_geometric.utils import to_undirected

    generator = torch.Generator().manual_seed(0)
    edge_index = to_undirected(torch.randint(0, nodes, (2, edges), generator=generator)).to(device)
    x = torch.randn(nodes, features, generator=generator).to(device)
    lines = [
        f"{nodes:,} nodes, {edge_index.shape[1]:,} directed edges, {features} features; {where()}",
        "",
        "| config | activation memory | ratio to FP32 | compressed | uncompressed | allocator's count |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    baseline, default_report = None, None
    for name, config in memory_configs().items():
        torch.manual_seed(0)
        model = GraphSAGE(features, 128, num_layers=3, out_channels=40, norm="batch", dropout=0.5).to(device)
        if config is not None:
            compress_(model, config)
        report = activation_memory(model, x, edge_index)
        baseline = baseline or report.total
        default_report = report if name == "default" else default_report
        allocator = allocator_growth(model, x, edge_index)
        cells = [format_bytes(n, "MiB") for n in (report.total, report.compressed, report.uncompressed, allocator)]
        lines.append(f"| {name} | {cells[0]} | {baseline / report.total:.1f}x | {' | '.join(cells[1:])} |")
    return "\n".join(lines + ["", "Per layer, default config:", "", str(default_report)])


# ---- gradients -----------------------------------------------------------------------------------


def gradient_configs() -> dict[str, CompressionConfig]:
    """The ideas measured for gradient quality per byte, by label (losers kept)."""
    default = PRESETS["default"]
    variants = {
        "exact() (shared, per row, RP 8)": PRESETS["exact"],
        "iexact() (shared, G=1024, RP 8)": PRESETS["iexact"],
        "shared RP 8": dataclasses.replace(default, projection="shared", rp_ratio=8, rp_norm=False),
        "per_row RP 8": dataclasses.replace(default, projection="per_row", rp_ratio=8, rp_norm=False),
        "sketch RP 8": dataclasses.replace(default, rp_ratio=8, rp_norm=False),
        "sketch RP 8, inputs compressed": dataclasses.replace(
            default, rp_ratio=8, rp_norm=False, reference_inputs=False
        ),
        "sketch RP 8, 8 bits": dataclasses.replace(default, rp_ratio=8, rp_norm=False, bits=8),
        "sketch RP 8, 4 bits": dataclasses.replace(default, rp_ratio=8, rp_norm=False, bits=4),
        "sketch RP 4": dataclasses.replace(default, rp_norm=False),
        "shared RP 4, rp_norm": dataclasses.replace(default, projection="shared"),
        "per_row RP 4, rp_norm": dataclasses.replace(default, projection="per_row"),
        "default (sketch RP 4, rp_norm)": default,
        "default, uniform levels": dataclasses.replace(default, levels="uniform"),
        "default, G=256": dataclasses.replace(default, block_size=256),
        "default, G=1024": dataclasses.replace(default, block_size=1024),
        "compact() (sketch RP 8, rp_norm)": PRESETS["compact"],
        "shared RP 8, rp_norm": dataclasses.replace(default, projection="shared", rp_ratio=8),
        "INT2, no projection": dataclasses.replace(default, rp_ratio=1),
    }
    return variants


def gradient_report(data, model_name: str, draws: int, steps: int, device: torch.device) -> str:
    r"""Per configuration: the whole-gradient relative error at initialization
    (:func:`iexact.gradient_error`, ``draws`` draws, the training loss), the
    activation memory and the median training step time over ``steps`` steps,
    both as ratios to FP32 measured in the same run; as Markdown."""
    from ..analysis import gradient_error
    from .data import num_classes
    from .models import build_model
    from .train import labels_of, loss_function, training_step

    labels = labels_of(data)

    def loss(out):
        return loss_function(out[data.train_mask], labels[data.train_mask])

    def fresh(config):
        torch.manual_seed(0)
        model = build_model(model_name, data.num_features, num_classes(data)).to(device)
        return model if config is None else compress_(model, config)

    def step_seconds(model):
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        rows = data.train_mask.nonzero().view(-1)
        return median_seconds(
            lambda: training_step(model, optimizer, data.x, data.edge_index, labels, rows, None), steps
        )

    fp32 = fresh(None)
    fp32_bytes = activation_memory(fp32, data.x, data.edge_index).total
    fp32_seconds = step_seconds(fp32)
    lines = [
        f"{model_name}, {data.num_nodes:,} nodes, {data.num_features} features; {where()}; "
        f"gradient error at initialization over {draws} draws; step time median of {steps}",
        "",
        "| config | gradient error | error of the mean | activation memory | vs FP32 | step time | vs FP32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| FP32 | 0 | 0 | {format_bytes(fp32_bytes, 'MiB')} | 1.0× | {1e3 * fp32_seconds:.0f} ms | 1.00× |",
    ]
    for label, config in gradient_configs().items():
        error = gradient_error(fresh(None), data.x, data.edge_index, loss_fn=loss, config=config, draws=draws)
        model = fresh(config)
        kept = activation_memory(model, data.x, data.edge_index).total
        seconds = step_seconds(model)
        lines.append(
            f"| {label} | {error.whole:.3f} | {error.of_mean:.3f} | {format_bytes(kept, 'MiB')} | "
            f"{fp32_bytes / kept:.1f}× | {1e3 * seconds:.0f} ms | {seconds / fp32_seconds:.2f}× |"
        )
    return "\n".join(lines)


# ---- training ------------------------------------------------------------------------------------

TRAIN_CONFIGS = (
    "fp32",
    "exact",
    "iexact",
    "default",
    "compact",
    "blocks",
    "uniform",
    "calibrated",
    "shared",
    "checkpoint",
)


def training_configs(names, block_sizes) -> list[tuple[str, RunKind, CompressionConfig | None]]:
    """``(label, kind, config)`` of each configuration ``iexact bench train``
    compares, in ``TRAIN_CONFIGS`` order; a configuration equal to one already
    listed runs once (and is said so)."""
    default = PRESETS["default"]
    compressed = RunKind.COMPRESSED
    menu: dict[str, list[tuple[str, RunKind, CompressionConfig | None]]] = {
        "fp32": [("FP32", RunKind.FP32, None)],
        **{name: [(f"{name}()", compressed, PRESETS[name])] for name in ("exact", "iexact", "compact")},
        "default": [("default", compressed, default)],
        "blocks": [
            (f"default, G={size}", compressed, dataclasses.replace(default, block_size=size)) for size in block_sizes
        ],
        "uniform": [("default, uniform levels", compressed, dataclasses.replace(default, levels="uniform"))],
        "calibrated": [("default, calibrated levels", compressed, dataclasses.replace(default, levels="calibrated"))],
        "shared": [("default, shared projection", compressed, dataclasses.replace(default, projection="shared"))],
        "checkpoint": [("torch.utils.checkpoint", RunKind.CHECKPOINTED, None)],
    }
    distinct: list[tuple[str, RunKind, CompressionConfig | None]] = []
    for name in TRAIN_CONFIGS:
        for label, kind, config in menu[name] if name in names else []:
            same = next((kept for kept, _, other in distinct if config is not None and other == config), None)
            if same is None:
                distinct.append((label, kind, config))
            else:
                print(f"{label} is {same}: run once", flush=True)
    return distinct


def run_training(jobs: list[Job], out: Path) -> list[dict]:
    """Run each job's runs in fresh ``python -m iexact.experiments.job``
    processes, one per run (so peak memory and timings are its own), run by
    run with the jobs alternating (FP32 run 1, default run 1, FP32 run 2,
    ...: this machine's slow phases, which last minutes, then fall on every
    configuration alike), and return one record per job, its runs merged
    (:func:`merged_runs`). Each child's record is written to ``out/runs/``
    as it finishes. A configuration that runs out of memory (under the job's
    ``memory_limit``) is recorded with an ``out_of_memory`` message; one that
    diverges, crashes or is killed with a ``failed`` message, and runs no
    more; the others go on either way."""
    folder = out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "KINETO_LOG_LEVEL": os.environ.get("KINETO_LOG_LEVEL", "6")}
    finished: list[list[dict]] = [[] for _ in jobs]
    for run in range(max(job.runs for job in jobs)):
        for index, job in enumerate(jobs):
            if run < job.runs and not any(_stopped(record) for record in finished[index]):
                stem = folder / f"{index:02d}-run{run + 1}"
                finished[index].append(_run_child(dataclasses.replace(job, only_run=run), stem, environment))
    return [merged_runs(records) for records in finished]


PEAK_KEYS = ("peak_memory", "peak_address_space", "memory_parts", "memory_floor")  # one process's peak, told together


def _stopped(record: dict) -> bool:
    """Whether ``record`` is of a run that ran out of memory or failed."""
    return "out_of_memory" in record or "failed" in record


def merged_runs(records: list[dict]) -> dict:
    """One configuration's record from those of its runs, each trained in a
    process of its own (in run order): the runs' accuracies, histories and
    epoch times together (:func:`~iexact.experiments.records.run_summary`),
    the peak of the run that peaked highest (:data:`PEAK_KEYS`), the rest
    (memory accounted, the gradient error, measured with run 1) the first
    run's. A run that ran out of memory or failed stands for the
    configuration."""
    stopped = next((record for record in records if _stopped(record)), None)
    if stopped is not None:
        return stopped
    highest = max(records, key=lambda record: record["peak_memory"]["bytes"])
    peak = {key: highest[key] for key in PEAK_KEYS if key in highest}
    return {**records[0], **peak, **run_summary([entry for record in records for entry in run_entries(record)])}


def _ignore_interrupts() -> None:
    """In a child, before it runs Python: ignore SIGINT (Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_child(job: Job, stem: Path, environment: dict) -> dict:
    """The record of ``job`` run in a child process (job file ``stem.job.json``, result ``stem.json``)."""
    job_path, result = stem.with_name(stem.name + ".job.json"), stem.with_name(stem.name + ".json")
    write_json_atomically(job_path, job.to_dict())
    result.unlink(missing_ok=True)  # a record of an earlier bench must not stand for this one
    command = [sys.executable, "-m", "iexact.experiments.job", str(job_path), str(result)]
    # Ctrl-C is the parent's to handle: it kills the child (subprocess.run does) and says what was kept
    finished = subprocess.run(
        command, stdout=subprocess.DEVNULL, env=environment, check=False, preexec_fn=_ignore_interrupts
    )
    label, settings = job.settings.label, job.settings.to_dict()
    if finished.returncode in (OUT_OF_MEMORY, DIVERGED) and result.is_file():
        record = {**settings, **json.loads(result.read_text())}
        print(f"{label}: {record.get('out_of_memory') or record['failed']}", flush=True)
    elif finished.returncode != 0 or not result.is_file():
        code = finished.returncode
        status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        record = {**settings, "failed": f"{status} (its output above; rerun alone: {' '.join(command)})"}
        print(f"{label}: failed, {record['failed']}", flush=True)
        write_json_atomically(result, record)
    else:
        record = json.loads(result.read_text())
    return record


def completed(records: list[dict]) -> list[dict]:
    """The records of configurations that trained (not out of memory, not failed)."""
    return [record for record in records if not _stopped(record)]


def _counted(memory: dict) -> int:
    """A record's activation memory as the allocator counted it, or as accounted
    where the allocator's count could not be measured (``None`` under a limit)."""
    return memory["total"] if memory["allocator"] is None else memory["allocator"]


def _allocator_cell(nbytes: int | None) -> str:
    return "not measured" if nbytes is None else format_bytes(nbytes, "MiB")


def markdown_table(records: list[dict]) -> str:
    """The side-by-side table of ``iexact bench train``: one row per configuration,
    ratios against the FP32 row of the same run (if there is one)."""
    fp32 = next((r for r in completed(records) if r["kind"] == RunKind.FP32.value), None)
    lines = [
        "| config | test accuracy (%) | gradient error | activation memory | vs FP32 | allocator's count | "
        "peak memory | epoch time | vs FP32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for record in records:
        if "out_of_memory" in record or "failed" in record:
            why = record.get("out_of_memory") or f"failed: {record['failed']}"
            lines.append(f"| {record['label']} | {why} |" + " |" * 7)
            continue
        memory, seconds = record["activation_memory"], record["epoch_seconds_median"]
        accuracy = record["test_accuracy"]
        memory_ratio = time_ratio = "–"
        if fp32 is not None:
            memory_ratio = f"{_counted(fp32['activation_memory']) / max(_counted(memory), 1):.1f}× less"
            time_ratio = f"{seconds / fp32['epoch_seconds_median']:.2f}×"
        gradient = record.get("gradient_error")
        lines.append(
            f"| {record['label']} | {100 * accuracy['mean']:.1f} ± {100 * accuracy['std']:.1f} | "
            f"{'–' if gradient is None or 'whole' not in gradient else format(gradient['whole'], '.3f')} | "
            f"{format_bytes(memory['total'], 'MiB')} | {memory_ratio} | {_allocator_cell(memory['allocator'])} | "
            f"{format_bytes(record['peak_memory']['bytes'], 'MiB')} | {1e3 * seconds:.1f} ms | {time_ratio} |"
        )
    return "\n".join(lines)


def curve_epochs(epochs: int) -> list[int]:
    """10, 20, 40, ... up to ``epochs``, and ``epochs`` itself."""
    marks, mark = [], 10
    while mark < epochs:
        marks.append(mark)
        mark *= 2
    return marks + [epochs]


def curve_table(records: list[dict]) -> str:
    """Best validation accuracy so far at epochs 10, 20, 40, ... (mean over runs), per
    configuration: how fast each one learns, against FP32 in the same benchmark."""
    records = completed(records)
    marks = curve_epochs(records[0]["epochs"]) if records else []
    lines = ["| config | " + " | ".join(f"epoch {mark}" for mark in marks) + " |", "|---|" + "---:|" * len(marks)]
    for record in records:
        histories = record["val_accuracy"]["history"]
        best = [sum(max(history[:mark]) for history in histories) / len(histories) for mark in marks]
        lines.append(f"| {record['label']} | " + " | ".join(f"{100 * value:.1f}" for value in best) + " |")
    return "\n".join(lines)


def write_plots(records: list[dict], folder) -> list[Path]:
    """``accuracy_vs_memory.png`` and ``layer_memory.png`` in ``folder`` (matplotlib's
    object API: no backend or global figure state is touched); returns their paths.

    Raises:
        ImportError: matplotlib is missing (``pip install "iexact[plot]"``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "iexact[plot]"') from None
    records = completed(records)
    if not records:
        return []
    folder = Path(folder)
    figure = Figure(figsize=(6, 4), layout="tight")
    axes = figure.add_subplot()
    for record in records:
        memory = max(_counted(record["activation_memory"]), 1) / 2**20
        axes.errorbar(
            memory,
            100 * record["test_accuracy"]["mean"],
            yerr=100 * record["test_accuracy"]["std"],
            fmt="o",
            capsize=3,
            label=record["label"],
        )
    axes.set_xscale("log")
    axes.set_xlabel("activation memory (MiB, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{records[0]['model']} on {records[0]['dataset']}")
    axes.legend(fontsize=7)
    scatter = folder / "accuracy_vs_memory.png"
    figure.savefig(scatter, dpi=120)

    figure = Figure(figsize=(7, 4), layout="tight")
    axes = figure.add_subplot()
    for position, record in enumerate(records):
        bottom = 0.0
        for layer in record["activation_memory"]["layers"]:
            height = (layer["compressed"] + layer["uncompressed"]) / 2**20
            axes.bar(
                position,
                height,
                bottom=bottom,
                color="C0" if layer["uncompressed"] == 0 else "C3",
                edgecolor="white",
                linewidth=0.5,
            )
            bottom += height
    axes.set_xticks(range(len(records)), [r["label"] for r in records], rotation=30, ha="right", fontsize=7)
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_ylabel("MiB kept for backward (symlog)")
    axes.set_title("per-layer activation memory (blue: compressed, red: uncompressed)", fontsize=9)
    bars = folder / "layer_memory.png"
    figure.savefig(bars, dpi=120)
    return [scatter, bars]
