r"""GPS on a batch of small graphs, as PyG's GPS example trains it: ``python benchmarks/gps_batch.py``.

Prints a Markdown table: 3 ``GPSConv`` layers (``GINEConv`` beside 4-head
``MultiheadAttention``, ``to_dense_batch`` padding each graph to the
largest), ``--hidden`` channels, on ``--graphs`` random graphs of
``--min-nodes`` to ``--max-nodes`` nodes (4 edges per node, 16 features per
edge) in one batch: FP32's activation memory beside the default config's,
what of it is uncompressed, and the gradient error at initialization
(:func:`iexact.gradient_error`, ``--draws`` draws). The attention keeps its
weights here (short sequences); the model families' GPS row of ``iexact
bench memory --models`` attends over one 2,000-node sequence instead.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings

import torch
from torch_geometric.nn import GPSConv

import iexact
from iexact.experiments.zoo import EDGE_DIM, gine_conv

CLASSES = 8


class GPS(torch.nn.Module):
    """``layers`` GPSConv layers of ``channels`` reading the edge features, then a linear classifier."""

    def __init__(self, channels: int, layers: int = 3):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            GPSConv(channels, gine_conv(channels, channels), heads=4, attn_type="multihead") for _ in range(layers)
        )
        self.out = torch.nn.Linear(channels, CLASSES)

    def forward(self, x, edge_index, edge_attr, batch):
        for layer in self.layers:
            x = layer(x, edge_index, batch, edge_attr=edge_attr)
        return self.out(x)


def batch_of_graphs(graphs: int, smallest: int, largest: int, channels: int, seed: int = 0):
    """``(x, edge_index, edge_attr, batch, labels)`` of ``graphs`` random graphs in one batch."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(smallest, largest + 1, (graphs,), generator=generator)
    batch = torch.repeat_interleave(torch.arange(graphs), sizes)
    starts = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, 4 * sizes)  # each edge's graph's first node
    size = torch.repeat_interleave(sizes, 4 * sizes)
    edge_index = (torch.rand(2, size.numel(), generator=generator) * size).long() + starts
    nodes, edges = int(sizes.sum()), edge_index.shape[1]
    x = torch.randn(nodes, channels, generator=generator)
    return x, edge_index, torch.randn(edges, EDGE_DIM, generator=generator), batch, torch.randint(0, CLASSES, (nodes,))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=64, help="graphs in the batch (default: 64)")
    parser.add_argument("--min-nodes", type=int, default=20, help="nodes of the smallest graph (default: 20)")
    parser.add_argument("--max-nodes", type=int, default=40, help="nodes of the largest graph (default: 40)")
    parser.add_argument("--hidden", type=int, default=64, help="channels, a multiple of 4 (default: 64)")
    parser.add_argument("--draws", type=int, default=8, help="gradient-error draws (default: 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    *inputs, labels = batch_of_graphs(args.graphs, args.min_nodes, args.max_nodes, args.hidden)
    torch.manual_seed(0)
    model = GPS(args.hidden)
    fp32 = iexact.activation_memory(model, *inputs).total
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPSConv's own dropout and padding are no module's: nothing to warn of
        compressed = iexact.compress_(copy.deepcopy(model), iexact.CompressionConfig())
    report = iexact.activation_memory(compressed, *inputs)
    error = iexact.gradient_error(
        compressed, *inputs, loss_fn=lambda out: torch.nn.functional.cross_entropy(out, labels), draws=args.draws
    )
    print(f"{args.graphs} graphs of {args.min_nodes}-{args.max_nodes} nodes, 3 GPSConv layers of {args.hidden}")
    print()
    print("| FP32 | default | ratio | of it uncompressed | gradient error | error of the mean |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {fp32 / 2**20:.2f} MiB | {report.total / 2**20:.2f} MiB | {fp32 / report.total:.1f}× "
        f"| {report.uncompressed / report.total:.0%} | {error.whole:.3f} | {error.of_mean:.3f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
