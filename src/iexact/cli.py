"""The ``iexact`` command."""
from __future__ import annotations

import argparse
import sys

import torch

from .bench import median_seconds
from .config import CompressionConfig
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
