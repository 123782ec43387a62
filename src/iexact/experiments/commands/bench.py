"""``iexact bench {train,gradients,batch-size,memory,codec}``: benchmarks, FP32
beside the compressed configurations in one run (the harness is
:mod:`iexact.experiments.bench`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from ...config import PRESETS
from ...memory import format_bytes
from ...nn.fallback import DEFAULT_FALLBACK
from .. import bench
from ..batch_size import SMALLEST, batch_size_table, largest_batch
from ..errors import UsageError
from ..files import write_json_atomically, write_text_atomically
from ..job import Job, load_data
from ..precision import PRECISIONS
from ..settings import RunKind
from ..zoo import zoo_report
from . import arguments
from .outputs import Output, add_outputs
from .train import add_experiment_arguments, job_from


def register(commands) -> None:
    parser = commands.add_parser("bench", help="benchmarks, FP32 beside the compressed configurations")
    kinds = parser.add_subparsers(dest="kind", required=True)
    for add in (_add_train, _add_gradients, _add_batch_size, _add_memory, _add_codec):
        add(kinds)


# ---- bench train ---------------------------------------------------------------------------------


def _add_train(kinds) -> None:
    parser = kinds.add_parser(
        "train",
        help="train FP32, the presets, a block-size sweep, uniform levels, rp_norm and torch.utils.checkpoint "
        "side by side",
    )
    add_experiment_arguments(parser)
    parser.add_argument(
        "--configs",
        type=arguments.choices(bench.TRAIN_CONFIGS),
        default=list(bench.TRAIN_CONFIGS),
        help=f"configurations to compare (default: all of {','.join(bench.TRAIN_CONFIGS)})",
    )
    parser.add_argument(
        "--block-sizes",
        type=lambda text: [arguments.block_size(part) for part in text.split(",")],
        default=[64, 256, 1024],
        help="block sizes of the default config's sweep (default: 64,256,1024); a configuration equal to one "
        "already listed runs once",
    )
    add_outputs(
        parser,
        Output(
            "--out",
            "folder for bench.md, bench.json, runs/ and plots",
            "bench-results",
            results=("bench.json", "bench.md"),
        ),
    )
    parser.set_defaults(run=run_train, parser=parser, config=RunKind.FP32.value, interrupted=_train_interrupted)


def run_train(args: argparse.Namespace) -> int:
    """Each run of each configuration trains in a fresh process, so peak memory
    (the process's peak RSS on CPU) and timings are its own, the
    configurations alternating run by run (:func:`~iexact.experiments.bench.run_training`)."""
    base = arguments.settings_from(args)
    jobs = [
        job_from(args, base.variant(kind, label, config))
        for label, kind, config in bench.training_configs(args.configs, args.block_sizes)
    ]
    data = load_data(jobs[0], data_only=True)  # builds a synthetic cache once, for every child
    precision = (
        ""
        if args.precision == "32"
        else f", precision {args.precision} (the FP32 row: activations kept uncompressed, under the same autocast)"
    )
    print(
        f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
        f"{args.epochs} epochs x {args.runs} runs, device {args.device}{precision}",
        flush=True,
    )
    del data
    out = Path(args.out)
    records = bench.run_training(jobs, out)
    table = bench.markdown_table(records) + "\n\nBest validation accuracy (%) so far:\n\n" + bench.curve_table(records)
    print(table)
    threads = next((record["threads"] for record in bench.completed(records)), args.threads)
    limit = "" if args.memory_limit is None else f", memory limit {format_bytes(args.memory_limit, 'GiB')}"
    heading = (
        f"{args.model} on {args.dataset}, {args.epochs} epochs x {args.runs} runs, {args.device}, "
        f"torch {torch.__version__}, {threads} threads{limit}{precision}\n\n"
    )
    write_text_atomically(out / "bench.md", heading + table + "\n")
    write_json_atomically(out / "bench.json", records)
    written = [out / "bench.md", out / "bench.json"]
    try:
        written += bench.write_plots(records, out)
    except ImportError as error:
        print(f"iexact bench: no plots: {error}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written))
    failed = [record["label"] for record in records if "failed" in record]
    if failed:
        print(
            f"iexact bench train: error: {', '.join(failed)} failed (see the table; the others are complete)",
            file=sys.stderr,
        )
        return 1
    return 0


def _train_interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    return f"finished runs are in {Path(args.out) / 'runs'}"


# ---- bench batch-size ----------------------------------------------------------------------------


def _add_batch_size(kinds) -> None:
    parser = kinds.add_parser(
        "batch-size", help="the largest mini-batch whose activations fit --memory, FP32 beside the compressed configs"
    )
    arguments.add_data(parser)
    arguments.add_model(parser, dropout=False)
    parser.add_argument(
        "--memory", type=arguments.size, required=True, help="activation memory allowed per batch (e.g. 64MiB)"
    )
    arguments.add_batching(parser, batch_size=False)
    configs = (RunKind.FP32.value, *PRESETS)
    parser.add_argument(
        "--configs",
        type=arguments.choices(configs),
        default=[RunKind.FP32.value, "default"],
        help=f"configurations (default: fp32,default; any of {','.join(configs)})",
    )
    parser.add_argument(
        "--samples",
        type=arguments.positive_int,
        default=3,
        help="batches measured per batch size, the costliest counting (default: 3)",
    )
    arguments.add_seed(parser, "of the batches and the model")
    arguments.add_runtime(parser, quiet=False)
    add_outputs(parser, Output("--json", "write the results to this JSON file"))
    # the batch size is what is searched: the settings' batching starts at the smallest
    parser.set_defaults(run=run_batch_size, parser=parser, config=RunKind.FP32.value, batch_size=SMALLEST)


def run_batch_size(args: argparse.Namespace) -> int:
    """The largest batch size within ``--memory`` per configuration."""
    base = arguments.settings_from(args)
    settings = {
        name: base if name == RunKind.FP32.value else base.variant(RunKind.COMPRESSED, name, PRESETS[name])
        for name in args.configs
    }
    data = load_data(Job(base, 1, device=str(args.device), root=str(args.root), offline=args.offline))
    batching = base.batching
    assert batching is not None  # the parser's default batch size
    fanout = f", fanout {','.join(map(str, batching.fanout))}" if batching.fanout else ""
    print(
        f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
        f"{batching.sampler} batches{fanout}, activation budget {format_bytes(args.memory)}, costliest of "
        f"{args.samples} batches per size, device {args.device}, {torch.get_num_threads()} threads",
        flush=True,
    )
    results = []
    for name, one in settings.items():
        results.append(largest_batch(name, one, data, args.device, args.memory, args.samples))
        print(f"{name}: {results[-1].batch_size:,}", flush=True)
    print(batch_size_table(results, format_bytes(args.memory)))
    if args.json:
        write_json_atomically(args.json, [dataclasses.asdict(result) for result in results])
        print(f"results written to {args.json}")
    return 0


# ---- bench gradients, memory, codec ---------------------------------------------------------------


def _add_gradients(kinds) -> None:
    parser = kinds.add_parser(
        "gradients",
        help="gradient error, activation memory and step time of every projection / bits / levels idea against FP32",
    )
    arguments.add_data(parser)
    arguments.add_model(parser, sizes=False, dropout=False)
    arguments.add_seed(parser, "of synthetic graphs")
    arguments.add_draws(parser)
    parser.add_argument("--steps", type=arguments.positive_int, default=5, help="timed training steps (default: 5)")
    arguments.add_runtime(parser, quiet=False)
    parser.set_defaults(run=run_gradients, parser=parser, config=RunKind.FP32.value)


def run_gradients(args: argparse.Namespace) -> int:
    settings = arguments.settings_from(args)
    data = load_data(Job(settings, 1, device=str(args.device), root=str(args.root), offline=args.offline))
    print(bench.gradient_report(data, args.model, args.draws, args.steps, args.device))
    return 0


def _add_memory(kinds) -> None:
    parser = kinds.add_parser(
        "memory",
        help="activation memory of the stock GraphSAGE on an arxiv-shaped graph, or with --models of every "
        "model family",
    )
    parser.add_argument(
        "--models",
        action="store_true",
        help="every model family people train (PyG's models and a stack of each conv, 3 layers of 64) on a "
        "random graph of 2,000 nodes and 16,000 edges: FP32 beside the default, the gradient error and what "
        "the saved-tensor fallback compresses",
    )
    parser.add_argument(
        "--nodes", type=arguments.positive_int, help="nodes (default: ogbn-arxiv's 169,343; 2,000 with --models)"
    )
    parser.add_argument(
        "--edges",
        type=arguments.positive_int,
        help="random edges (default: 1,166,243, then made undirected; 16,000 with --models)",
    )
    parser.add_argument("--features", type=arguments.positive_int, help="features (default: 128; 64 with --models)")
    parser.add_argument(
        "--draws", type=arguments.positive_int, default=8, help="gradient-error draws with --models (default: 8)"
    )
    parser.add_argument(
        "--fallback-bits",
        type=int,
        choices=(1, 2, 4, 8),
        default=DEFAULT_FALLBACK.bits,
        help=f"bits of the saved-tensor fallback with --models (default: {DEFAULT_FALLBACK.bits})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="with --models: measure under torch.autocast in bf16 or fp16, the FP32 column then the autocast "
        "baseline (default: 32)",
    )
    parser.add_argument(
        "--max-error",
        type=arguments.number(0, low_open=True),
        help="with --models: also plan each family for the least memory whose gradient error is measured "
        "within this (iexact.plan_memory(max_error=...)), its ratio and error beside the default's",
    )
    arguments.add_runtime(parser, quiet=False)
    parser.set_defaults(run=_run_memory, parser=parser)


def _run_memory(args: argparse.Namespace) -> int:
    if args.precision != "32" and not args.models:
        raise UsageError(
            "--precision needs --models (the arxiv-shaped table is float32's; for bf16 there use "
            "iexact bench train --precision bf16)"
        )
    if args.max_error is not None and (not args.models or args.precision != "32"):
        raise UsageError("--max-error needs --models, in float32 (without --precision)")
    if args.models:
        nodes, edges, features = args.nodes or 2_000, args.edges or 16_000, args.features or 64
        fallback = dataclasses.replace(DEFAULT_FALLBACK, bits=args.fallback_bits)
        graph = (nodes, edges, features)
        config = PRESETS["default"]
        return _print(zoo_report(graph, 64, args.draws, config, fallback, args.device, args.precision, args.max_error))
    nodes, edges, features = args.nodes or 169_343, args.edges or 1_166_243, args.features or 128
    return _print(bench.memory_report(nodes, edges, features, args.device))


def _add_codec(kinds) -> None:
    parser = kinds.add_parser("codec", help="compress one ogbn-arxiv-shaped activation with every preset")
    parser.add_argument(
        "--rows", type=arguments.positive_int, default=169_343, help="rows N (default: ogbn-arxiv's 169,343)"
    )
    parser.add_argument("--width", type=arguments.positive_int, default=128, help="features D (default: 128)")
    parser.add_argument("--repeats", type=arguments.positive_int, default=5, help="timed runs per entry (default: 5)")
    arguments.add_seed(parser, "of the data and the compression")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also the round-trip throughput over bits x block x levels against a straightforward PyTorch version",
    )
    arguments.add_runtime(parser, device_flag=False, quiet=False)
    parser.set_defaults(
        run=lambda args: _print(bench.codec_report(args.rows, args.width, args.repeats, args.seed, args.sweep)),
        parser=parser,
    )


def _print(text: str) -> int:
    print(text)
    return 0
