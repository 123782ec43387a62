"""The ``iexact`` command: ``presets``, ``datasets``, ``train`` and ``bench``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .bench import markdown_table, median_seconds, mib, write_plots
from .checkpoint import CheckpointError, write_atomically
from .config import CompressionConfig
from .data import DATASETS, DatasetFilesMissing, load_dataset
from .experiment import CHECKPOINTING, FP32, Settings, run_experiment
from .models import MODELS
from .quant import compress, decompress

PRESETS = ("exact", "iexact", "default")


def preset_table(rows: int, width: int, repeats: int, seed: int) -> list[dict]:
    """Compress one ``rows x width`` standard-normal activation with every
    preset; stored bytes, ratio to float32, error and median times."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=generator)
    signal = x.pow(2).mean().item()
    results = []
    for name in PRESETS:
        config = CompressionConfig.preset(name)
        packed = compress(x, config, seed=seed)
        error = (decompress(packed) - x).pow(2).mean().item()
        out = torch.empty_like(x)
        results.append({
            "preset": name,
            "config": config,
            "bytes": packed.nbytes,
            "ratio": x.nbytes / packed.nbytes,
            "error_variance": error,
            "relative_error": error / signal,
            "compress_ms": 1e3 * median_seconds(lambda: compress(x, config, seed=seed), repeats),
            "decompress_ms": 1e3 * median_seconds(lambda: decompress(packed, out=out), repeats),
        })
    return results


def _describe(config: CompressionConfig) -> str:
    return (f"INT{config.bits}, blocks {config.block_size}, RP {config.rp_ratio:g}, "
            f"{config.levels}, {str(config.scale_dtype).removeprefix('torch.')} scales")


def _presets(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    results = preset_table(args.rows, args.width, args.repeats, args.seed)
    fp32 = args.rows * args.width * 4
    print(f"Activation {args.rows} x {args.width} float32 ({fp32:,} bytes), "
          f"{torch.get_num_threads()} threads, median of {args.repeats} runs")
    print()
    print("| preset | config | stored bytes | vs FP32 | error variance | relative | compress ms | decompress ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['preset']} | {_describe(r['config'])} | {r['bytes']:,} | {r['ratio']:.1f}x | "
              f"{r['error_variance']:.4f} | {r['relative_error']:.3f} | {r['compress_ms']:.1f} | "
              f"{r['decompress_ms']:.1f} |")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _number(low: float, high: float = float("inf"), low_open: bool = False):
    """An argparse type for a float in ``[low, high)`` (``(low, high)`` when ``low_open``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value < high:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    return parse


def _block_size(text: str):
    if text == "row":
        return "row"
    try:
        return _positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f'must be a positive integer or "row", got {text!r}') from None


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda was asked for but torch sees no CUDA device")
    return device


def _compression(args, parser) -> CompressionConfig | None:
    """The preset ``--config`` with any explicit ``--bits/--block-size/--rp-ratio/--levels/--rp-norm``."""
    overrides = {field: getattr(args, field) for field in ("bits", "block_size", "rp_ratio", "levels", "rp_norm")
                 if getattr(args, field) is not None}
    if args.config in (FP32, CHECKPOINTING):
        if overrides:
            parser.error(f"--config {args.config} stores nothing compressed: drop "
                         f"{', '.join(sorted(overrides))} or pick a compressed --config")
        return None
    try:
        return dataclasses.replace(CompressionConfig.preset(args.config), **overrides)
    except ValueError as error:
        parser.error(str(error))


def _settings(args, config_name: str, config: CompressionConfig | None) -> Settings:
    return Settings(dataset=args.dataset, model=args.model, config_name=config_name, config=config,
                    layers=args.layers, hidden=args.hidden, dropout=args.dropout, lr=args.lr,
                    weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed)


def _load(args, parser):
    try:
        data = load_dataset(args.dataset, args.root, download=not args.offline, seed=args.seed)
    except ValueError as error:
        parser.error(str(error))
    return data.to(args.device)


class _Progress:
    """One status line on stderr: run, epoch, loss, validation score (a bar on a terminal)."""

    def __init__(self, label: str, epochs: int, runs: int, enabled: bool):
        self.label, self.epochs, self.runs, self.enabled = label, epochs, runs, enabled
        self.terminal = sys.stderr.isatty()

    def __call__(self, run, state) -> None:
        if not self.enabled:
            return
        done = state.epoch / self.epochs
        bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
        line = (f"{self.label} run {run + 1}/{self.runs} [{bar}] epoch {state.epoch}/{self.epochs} "
                f"loss {state.last_loss:.4f} best val {100 * state.best_val:.1f}%")
        if self.terminal:
            print("\r" + line, end="\n" if state.epoch == self.epochs else "", file=sys.stderr, flush=True)
        elif state.epoch == self.epochs or state.epoch % max(1, self.epochs // 10) == 0:
            print(line, file=sys.stderr, flush=True)


def _describe_record(record: dict) -> str:
    memory, accuracy = record["activation_memory"], record["test_accuracy"]
    return "\n".join([
        f"test accuracy {100 * accuracy['mean']:.2f} ± {100 * accuracy['std']:.2f} % "
        f"(best validation epoch, {record['runs']} run{'s' if record['runs'] > 1 else ''})",
        f"activation memory {mib(memory['total'])} (compressed {mib(memory['compressed'])}, "
        f"uncompressed {mib(memory['uncompressed'])}; allocator's count {mib(memory['allocator'])})",
        f"peak memory {mib(record['peak_memory']['bytes'])} ({record['peak_memory']['kind']})",
        f"median epoch time {1e3 * record['epoch_seconds_median']:.1f} ms",
    ])


def _write_json(path, record) -> None:
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(path, lambda file: file.write(text.encode()))


def _train(args) -> int:
    parser = args.parser
    if (args.save_every or args.resume) and args.checkpoint is None:
        parser.error("--save-every and --resume need --checkpoint PATH")
    config = _compression(args, parser)
    data = _load(args, parser)
    settings = _settings(args, args.config, config)
    print(f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges, "
          f"{data.num_features} features), model {args.model}, config {args.config}"
          f"{f' ({_describe(config)})' if config else ''}, device {args.device}")
    progress = _Progress(args.config, args.epochs, args.runs, not args.quiet)
    record = run_experiment(settings, data, args.device, args.epochs, args.runs, args.checkpoint,
                            args.save_every or 0, args.resume, progress)
    print(_describe_record(record))
    if args.json:
        _write_json(args.json, record)
        print(f"results written to {args.json}")
    return 0


def _bench_configs(args) -> list[tuple[str, str, CompressionConfig | None]]:
    """``(label, config_name, config)`` of each configuration ``iexact bench`` compares."""
    default = CompressionConfig.default()
    entries = [("FP32", FP32, None), ("exact()", "exact", CompressionConfig.exact()),
               ("iexact()", "iexact", CompressionConfig.iexact()), ("default", "default", default)]
    entries += [(f"default, G={size}", "default", dataclasses.replace(default, block_size=size))
                for size in args.block_sizes]
    entries.append(("default, uniform levels", "default", dataclasses.replace(default, levels="uniform")))
    entries.append(("default, rp_norm=True", "default", dataclasses.replace(default, rp_norm=True)))
    distinct = []
    for label, name, config in entries:
        same = next((kept for kept, _, other in distinct if config is not None and other == config), None)
        if same is None:
            distinct.append((label, name, config))
        else:
            print(f"{label} is {same}: run once", flush=True)
    return distinct + [("torch.utils.checkpoint", CHECKPOINTING, None)]


def _train_argv(args, name: str, config: CompressionConfig | None) -> list[str]:
    """``iexact train`` arguments reproducing one bench configuration."""
    argv = ["--dataset", args.dataset, "--root", str(args.root), "--model", args.model,
            "--epochs", str(args.epochs), "--runs", str(args.runs), "--lr", repr(args.lr),
            "--weight-decay", repr(args.weight_decay), "--grad-clip", repr(args.grad_clip),
            "--device", str(args.device), "--seed", str(args.seed), "--config", name]
    for flag in ("layers", "hidden", "dropout"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += ["--offline"] * args.offline + ["--quiet"] * args.quiet
    if config is not None:
        argv += ["--bits", str(config.bits), "--block-size", str(config.block_size),
                 "--rp-ratio", repr(config.rp_ratio), "--levels", config.levels] + ["--rp-norm"] * config.rp_norm
    return argv


def _bench(args) -> int:
    """Each configuration trains in a fresh ``iexact train`` process, so peak
    memory (the process's peak RSS on CPU) and timings are its own."""
    parser = args.parser
    data = _load(args, parser)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    print(f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
          f"{args.epochs} epochs x {args.runs} runs, device {args.device}", flush=True)
    del data
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        for index, (label, name, config) in enumerate(_bench_configs(args)):
            result = Path(scratch) / f"{index}.json"
            command = [sys.executable, "-m", "iexact", "train", *_train_argv(args, name, config), "--json", str(result)]
            finished = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
            if finished.returncode != 0:
                print(f"iexact bench: error: configuration {label!r} failed (exit {finished.returncode}): "
                      f"{' '.join(command)}", file=sys.stderr)
                return 1
            records.append({"label": label, **json.loads(result.read_text())})
    table = markdown_table(records)
    print(table)
    heading = (f"{args.model} on {args.dataset}, {args.epochs} epochs x {args.runs} runs, {args.device}, "
               f"torch {torch.__version__}\n\n")
    write_atomically(out / "bench.md", lambda file: file.write((heading + table + "\n").encode()))
    _write_json(out / "bench.json", records)
    written = [out / "bench.md", out / "bench.json"]
    try:
        written += write_plots(records, out)
    except ImportError as error:
        print(f"iexact bench: no plots: {error}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _datasets(args) -> int:
    print("datasets (--dataset), read from --root:")
    for name in DATASETS:
        print(f"  {name}")
    return 0


def _add_experiment_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--dataset", default="synthetic",
                         help="dataset name, see `iexact datasets` (default: synthetic)")
    command.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    command.add_argument("--offline", action="store_true", help="never download missing dataset files")
    command.add_argument("--model", choices=MODELS, default="sage", help="reference model (default: sage)")
    command.add_argument("--layers", type=_positive_int, help="override the model's layer count")
    command.add_argument("--hidden", type=_positive_int, help="override the model's hidden width")
    command.add_argument("--dropout", type=_number(0, 1), help="override the model's dropout")
    command.add_argument("--epochs", type=_positive_int, default=200, help="epochs per run (default: 200)")
    command.add_argument("--runs", type=_positive_int, default=1, help="runs, seeds seed..seed+runs-1 (default: 1)")
    command.add_argument("--lr", type=_number(0, low_open=True), default=0.01, help="Adam learning rate (default: 0.01)")
    command.add_argument("--weight-decay", type=_number(0), default=0.0, help="Adam weight decay (default: 0)")
    command.add_argument("--grad-clip", type=_number(0, low_open=True), default=0.5, help="max gradient norm (default: 0.5)")
    command.add_argument("--device", type=_device, default=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
                         help="cpu, cuda or cuda:N (default: cuda when available)")
    command.add_argument("--seed", type=int, default=0, help="seed of run 1 and of synthetic graphs (default: 0)")
    command.add_argument("--quiet", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iexact", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    presets = commands.add_parser(
        "presets", help="compress an ogbn-arxiv-shaped activation with every preset and print a table")
    presets.add_argument("--rows", type=_positive_int, default=169_343, help="rows N (default: ogbn-arxiv's 169,343)")
    presets.add_argument("--width", type=_positive_int, default=128, help="features D (default: 128)")
    presets.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per preset (default: 5)")
    presets.add_argument("--seed", type=int, default=0, help="seed of the data and the compression (default: 0)")
    presets.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    presets.set_defaults(run=_presets)

    datasets = commands.add_parser("datasets", help="list the dataset names")
    datasets.set_defaults(run=_datasets)

    train = commands.add_parser("train", help="train a reference model with compressed activations")
    _add_experiment_arguments(train)
    train.add_argument("--config", choices=(FP32, "exact", "iexact", "default", CHECKPOINTING), default="default",
                       help="compression preset; fp32 for none, checkpoint for torch.utils.checkpoint "
                            "around every message-passing layer (default: default)")
    train.add_argument("--bits", type=int, help="override the preset's bits (1, 2, 4, 8)")
    train.add_argument("--block-size", type=_block_size, help='override the block size (int or "row")')
    train.add_argument("--rp-ratio", type=float, help="override the projection ratio (>= 1)")
    train.add_argument("--levels", help="override the levels (uniform, optimal)")
    train.add_argument("--rp-norm", action="store_const", const=True, help="also project BatchNorm inputs")
    train.add_argument("--json", help="write the results to this JSON file")
    train.add_argument("--checkpoint", help="checkpoint file: written at the end of every run (and every "
                                            "--save-every epochs), or resumed from with --resume")
    train.add_argument("--save-every", type=_positive_int, help="save a checkpoint every N epochs")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.set_defaults(run=_train, parser=train)

    bench = commands.add_parser("bench", help="compare FP32, the presets, a block-size sweep, uniform levels "
                                              "and torch.utils.checkpoint side by side")
    _add_experiment_arguments(bench)
    bench.add_argument("--block-sizes", type=lambda text: [_block_size(part) for part in text.split(",")],
                       default=[64, 128, 1024],
                       help="block sizes of the default config's sweep (default: 64,128,1024); "
                            "a configuration equal to one already listed runs once")
    bench.add_argument("--out", default="bench-results", help="folder for bench.md, bench.json and the plots")
    bench.set_defaults(run=_bench, parser=bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; usage errors exit with status 2, missing files and bad
    checkpoints return 1 after one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CheckpointError, FileNotFoundError, ImportError) as error:
        print(f"iexact {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
