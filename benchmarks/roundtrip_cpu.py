"""Round-trip throughput of compress + decompress on CPU.

For a 169,343 x 128 float32 activation (ogbn-arxiv's shape) and projection
ratio 8, prints GB/s of float32 input per bits x block size x levels, in two
modes: decompress into a fresh tensor (what a one-off call pays, page faults
of the 87 MB output included) and into a reused ``out`` tensor (the steady
state). A straightforward PyTorch version of INT2 / RP 8 / blocks of 1024 is
timed in the same run as the baseline.

    python benchmarks/roundtrip_cpu.py [--repeats 7] [--rows 169343] [--width 128]
"""
from __future__ import annotations

import argparse
import math
import platform

import torch

from iexact import CompressionConfig, compress, decompress
from iexact.bench import median_seconds
from iexact.quant.projection import rademacher


def straightforward_round_trip(x: torch.Tensor, block_size: int = 1024, bits: int = 2, ratio: int = 8) -> torch.Tensor:
    """The obvious PyTorch implementation: float noise, one op per step, fresh tensors."""
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
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    packed = (codes << shifts).sum(1).to(torch.uint8)
    unpacked = ((packed[:, None] >> shifts) & top).view(-1, block_size).float()
    z = (unpacked * scale[:, None] + low[:, None]).view(-1)[: flat.numel()].view(x.shape[0], k)
    return z @ projection.t()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=169_343)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    x = torch.randn(args.rows, args.width, generator=torch.Generator().manual_seed(0))
    gigabytes = x.nbytes / 1e9
    out = torch.empty_like(x)
    print(f"{args.rows} x {args.width} float32 ({x.nbytes / 1e6:.1f} MB), RP 8, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"median of {args.repeats}")
    print()
    baseline = median_seconds(lambda: straightforward_round_trip(x), args.repeats)
    print(f"straightforward PyTorch INT2 / RP 8 / blocks 1024: {gigabytes / baseline:.2f} GB/s")
    print()
    print("| bits | block | levels | compress ms | decompress ms (fresh / reused out) | GB/s fresh | GB/s reused out |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for bits in (1, 2, 4, 8):
        for block_size in ("row", 64, 256, 1024):
            for levels in ("uniform", "optimal"):
                if bits == 1 and levels == "optimal":
                    continue  # one interior-free level pair: identical to uniform
                config = CompressionConfig(bits=bits, block_size=block_size, rp_ratio=8, levels=levels)
                packed = compress(x, config, seed=0)
                c = median_seconds(lambda: compress(x, config, seed=0), args.repeats)
                d_fresh = median_seconds(lambda: decompress(packed), args.repeats)
                d_out = median_seconds(lambda: decompress(packed, out=out), args.repeats)
                print(f"| {bits} | {block_size} | {levels} | {1e3 * c:.1f} | {1e3 * d_fresh:.1f} / {1e3 * d_out:.1f} | "
                      f"{gigabytes / (c + d_fresh):.2f} | {gigabytes / (c + d_out):.2f} |", flush=True)


if __name__ == "__main__":
    main()
