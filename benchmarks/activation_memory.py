"""Activation memory of the stock GraphSAGE on an ogbn-arxiv-shaped graph.

Random graph with ogbn-arxiv's shape (169,343 nodes, 1,166,243 random edges
made undirected, 128 features), the stock
``GraphSAGE(128, 128, num_layers=3, out_channels=40, norm="batch", dropout=0.5)``
given ``edge_index`` as it comes. For FP32 and each config: bytes held for
backward (``iexact.activation_memory``), split compressed / uncompressed, the
ratio to FP32 from the same run, and the allocator's view as a cross-check
(CUDA ``memory_allocated`` growth, or on CPU the net bytes allocated by
torch's CPU allocator as the profiler sees them, while the graph of one
training forward is alive, the output's own bytes subtracted).

    python benchmarks/activation_memory.py [--device cpu] [--nodes 169343] [--edges 1166243]
"""
from __future__ import annotations

import argparse
import dataclasses
import platform

import torch
from torch_geometric.nn.models import GraphSAGE
from torch_geometric.utils import to_undirected

import iexact
import iexact.memory
from iexact import CompressionConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--nodes", type=int, default=169_343)
    parser.add_argument("--edges", type=int, default=1_166_243)
    parser.add_argument("--features", type=int, default=128)
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    edge_index = to_undirected(torch.randint(0, args.nodes, (2, args.edges), generator=generator)).to(device)
    x = torch.randn(args.nodes, args.features, generator=generator).to(device)
    configs = {
        "FP32": None,
        "exact()": CompressionConfig.exact(),
        "iexact()": CompressionConfig.iexact(),
        "default": CompressionConfig.default(),
        "exact(), rp_norm=True": dataclasses.replace(CompressionConfig.exact(), rp_norm=True),
        "iexact(), rp_norm=True": dataclasses.replace(CompressionConfig.iexact(), rp_norm=True),
        "default, rp_norm=True": CompressionConfig(rp_norm=True),
    }
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{args.nodes:,} nodes, {edge_index.shape[1]:,} directed edges, {args.features} features; "
          f"torch {torch.__version__}, {where}\n")
    print("| config | activation memory | ratio to FP32 | compressed | uncompressed | allocator's count |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline, default_report = None, None
    for name, config in configs.items():
        torch.manual_seed(0)
        model = GraphSAGE(args.features, 128, num_layers=3, out_channels=40, norm="batch", dropout=0.5).to(device)
        if config is not None:
            iexact.compress_(model, config)
        report = iexact.activation_memory(model, x, edge_index)
        baseline = baseline or report.total
        if name == "default":
            default_report = report
        grown = iexact.memory.allocator_growth(model, x, edge_index)
        print(f"| {name} | {report.total / 2**20:,.2f} MiB | {baseline / report.total:.1f}x | "
              f"{report.compressed / 2**20:,.2f} MiB | {report.uncompressed / 2**20:,.2f} MiB | "
              f"{grown / 2**20:,.2f} MiB |")
    print(f"\nPer layer, default config:\n\n{default_report}")


if __name__ == "__main__":
    main()
