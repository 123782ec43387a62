r"""The GPU benchmark, in one run, for the day a GPU is lent: ``python benchmarks/gpu.py``.

Prints two Markdown tables:

1. **Codec round trip** on an activation of ``--rows`` x ``--width`` in
   ``--dtype`` (float32; ``bfloat16`` or ``float16`` as autocast's linear
   maps return them): compress + decompress GB/s per preset (input bytes
   over the median round trip), beside ``torch``'s own device copy bandwidth
   on the same tensor (``out.copy_(x)``, same bytes) as the ceiling a
   memory-bound kernel has.
2. **Training**: FP32 beside the default config (and ``--configs``) on
   ``--dataset`` with ``--model``, full batch, in ``--precision`` (``bf16``:
   every row under ``torch.autocast``, the FP32 row then the mixed-precision
   baseline): median epoch time over ``--epochs`` (the first is warm-up), its
   ratio to FP32, peak memory (``torch.cuda.max_memory_allocated``) and
   activation memory.

Timings synchronize the device around every call. ``--device cpu`` runs the
same code on the CPU with small defaults (a smoke test: the suite runs it so
that this script cannot rot; its numbers mean nothing for a GPU, and its peak
memory is the process's, cumulative over the configurations).
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial

import torch

from iexact import PRESETS, compress, decompress
from iexact.experiments.bench import median_seconds, where
from iexact.experiments.data import load_dataset
from iexact.experiments.experiment import run_experiment
from iexact.experiments.precision import PRECISIONS
from iexact.experiments.settings import RunKind, Settings
from iexact.kernels import uses_triton
from iexact.memory import format_bytes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def round_trip_table(rows: int, width: int, repeats: int, device: torch.device, dtype: torch.dtype) -> str:
    x = torch.randn(rows, width, device=device, generator=torch.Generator(device).manual_seed(0)).to(dtype)
    out = torch.empty_like(x)
    gigabytes = x.nbytes / 1e9
    copy = median_seconds(lambda: out.copy_(x), repeats)
    lines = [
        f"Round trip of a {rows:,} x {width} {str(dtype).removeprefix('torch.')} activation "
        f"({x.nbytes / 2**20:,.1f} MiB); {where()}; "
        f"{'Triton' if uses_triton(device) else 'PyTorch'} kernels; median of {repeats}",
        "",
        "| config | compress ms | decompress ms | round trip GB/s | vs torch copy |",
        "|---|---:|---:|---:|---:|",
        f"| torch copy_ | – | – | {gigabytes / copy:.2f} | 1.00× |",
    ]
    for name, config in PRESETS.items():
        packed = compress(x, config, seed=0)
        squeeze = median_seconds(partial(compress, x, config, seed=0), repeats)
        restore = median_seconds(partial(decompress, packed, out=out, check=False), repeats)
        rate = gigabytes / (squeeze + restore)
        lines.append(
            f"| {name} | {1e3 * squeeze:.2f} | {1e3 * restore:.2f} | {rate:.2f} | {rate / (gigabytes / copy):.2f}× |"
        )
    return "\n".join(lines)


def training_table(
    dataset: str, model: str, configs: list[str], epochs: int, device: torch.device, precision: str
) -> str:
    data = load_dataset(dataset).to(device)
    lines = [
        f"{model} on {dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), full batch, "
        f"{epochs} epochs (median after the first), precision {precision}; {where()}",
        "",
        "| config | epoch time | vs FP32 | peak memory | vs FP32 | activation memory | test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = None
    fp32 = RunKind.FP32.value
    for name in [fp32] + [c for c in configs if c != fp32]:
        kind, config = (RunKind.FP32, None) if name == fp32 else (RunKind.COMPRESSED, PRESETS[name])
        settings = Settings(dataset=dataset, model=model, kind=kind, label=name, config=config, precision=precision)
        record = run_experiment(settings, data, device, epochs, 1)
        seconds, peak = record["epoch_seconds_median"], record["peak_memory"]["bytes"]
        baseline = baseline or (seconds, peak)
        lines.append(
            f"| {name} | {1e3 * seconds:.1f} ms | {seconds / baseline[0]:.2f}× | {format_bytes(peak, 'MiB')} | "
            f"{baseline[1] / peak:.1f}× less | {format_bytes(record['activation_memory']['total'], 'MiB')} | "
            f"{100 * record['test_accuracy']['mean']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    parser.add_argument("--rows", type=int, help="activation rows (default: 2,449,029 on CUDA, 4,096 on CPU)")
    parser.add_argument("--width", type=int, default=128, help="activation width (default: 128)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per entry (default: 10)")
    parser.add_argument("--dataset", help="training dataset (default: synthetic-arxiv on CUDA, synthetic on CPU)")
    parser.add_argument("--model", default="sage", help="reference model (default: sage)")
    parser.add_argument("--configs", default="default", help="compressed presets beside FP32 (default: default)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per configuration (default: 10)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="the round trip's input (default: float32)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="32", help="training's mixed precision, every row (default: 32)"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here; --device cpu runs it as a smoke test", file=sys.stderr)
        return 2
    on_gpu = device.type == "cuda"
    rows = args.rows or (2_449_029 if on_gpu else 4_096)
    dataset = args.dataset or ("synthetic-arxiv" if on_gpu else "synthetic")
    configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in configs if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset {', '.join(unknown)}: choose from {', '.join(PRESETS)}")
    print(round_trip_table(rows, args.width, args.repeats, device, DTYPES[args.dtype]))
    print()
    print(training_table(dataset, args.model, configs, args.epochs, device, args.precision))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # this process's own: the profiler's log lines off
    sys.exit(main())
