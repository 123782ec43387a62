r"""The default's block size, by gradient error: ``python benchmarks/block_size.py``.

Prints a Markdown table: the whole-gradient relative error at initialization
(:func:`iexact.gradient_error`, ``--draws`` draws, and the error of their
mean) of the stock ``GraphSAGE(F, 128, 3, C, norm="batch")`` on ``synthetic``
without dropout and with ``dropout=0.5`` (the reference model), for the
default config at each block size. The bytes each keeps are in ``iexact bench
memory``'s table (the default beside ``G=64`` and ``G=256``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch
from torch_geometric.nn.models import GraphSAGE

import iexact
from iexact.experiments.data import load_dataset, num_classes
from iexact.experiments.train import labels_of, loss_function

BLOCK_SIZES = (64, 128, 256, 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic", help="dataset (default: synthetic)")
    parser.add_argument("--draws", type=int, default=32, help="compressed backward passes per cell (default: 32)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    labels = labels_of(data)

    def loss(out: torch.Tensor) -> torch.Tensor:
        return loss_function(out[data.train_mask], labels[data.train_mask])

    print(f"GraphSAGE 3 x 128, BatchNorm, on {args.dataset}; {args.draws} draws; {args.threads} threads")
    print()
    print("| block size | error, no dropout | of the mean | error, dropout 0.5 | of the mean |")
    print("|---|---:|---:|---:|---:|")
    for block_size in BLOCK_SIZES:
        config = dataclasses.replace(iexact.CompressionConfig(), block_size=block_size)
        cells = []
        for dropout in (0.0, 0.5):
            torch.manual_seed(0)
            model = GraphSAGE(data.num_features, 128, 3, num_classes(data), norm="batch", dropout=dropout)
            error = iexact.gradient_error(model, data.x, data.edge_index, loss_fn=loss, config=config, draws=args.draws)
            cells += [f"{error.whole:.3f}", f"{error.of_mean:.3f}"]
        default = " (default)" if block_size == iexact.CompressionConfig().block_size else ""
        print(f"| {block_size}{default} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
