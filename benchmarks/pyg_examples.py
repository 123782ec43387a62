r"""PyG's own example models as written, compressed: ``python benchmarks/pyg_examples.py --root ROOT --offline``.

Prints a Markdown table for the models of PyG's ``examples/gcn.py`` (two
``GCNConv`` of 16 channels, cached normalization) and ``examples/gat.py``
(two ``GATConv``, 8 heads of 8, attention dropout 0.6), each with the
dropout and the activation between its convs as functions of its own
forward, trained as the examples train them (Adam, weight decay 5e-4,
``--epochs`` full-batch epochs) on ``--dataset`` (Cora by default): the
activation memory of FP32, of the default config without the model's own
code compressed (``fallback=None``: the convs alone) and with it
(:mod:`iexact.nn.model_code`), and the test accuracy at the best validation
epoch over ``--runs`` seeds, FP32 beside the default.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv, GCNConv

import iexact
from iexact.experiments.data import load_dataset, num_classes


class GCN(torch.nn.Module):
    """``examples/gcn.py``'s model."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.conv1, self.conv2 = GCNConv(features, 16, cached=True), GCNConv(16, classes, cached=True)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=0.5, training=self.training)
        x = self.conv1(x, edge_index).relu()
        x = F.dropout(x, p=0.5, training=self.training)
        return self.conv2(x, edge_index)


class GAT(torch.nn.Module):
    """``examples/gat.py``'s model."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.conv1 = GATConv(features, 8, heads=8, dropout=0.6)
        self.conv2 = GATConv(64, classes, heads=1, concat=False, dropout=0.6)

    def forward(self, x, edge_index):
        x = F.dropout(x, p=0.6, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, p=0.6, training=self.training)
        return self.conv2(x, edge_index)


EXAMPLES = {"gcn.py": (GCN, 0.01), "gat.py": (GAT, 0.005)}  # the model and the example's learning rate


def test_accuracy(model: torch.nn.Module, data, learning_rate: float, epochs: int) -> float:
    """Train ``model`` as the example does; the test accuracy at its best validation accuracy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=5e-4)
    best_validation, test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = model(data.x, data.edge_index).argmax(-1) == data.y
        validation = correct[data.val_mask].float().mean().item()
        if validation > best_validation:
            best_validation, test = validation, correct[data.test_mask].float().mean().item()
    return test


def _row(name: str, data, runs: int, epochs: int) -> str:
    build, learning_rate = EXAMPLES[name]
    torch.manual_seed(0)
    model = build(data.num_features, num_classes(data))
    fp32 = iexact.activation_memory(model, data.x, data.edge_index).total
    convs = iexact.activation_memory(
        iexact.compress_(copy.deepcopy(model), iexact.CompressionConfig(), fallback=None), data.x, data.edge_index
    ).total
    kept = iexact.activation_memory(
        iexact.compress_(copy.deepcopy(model), iexact.CompressionConfig()), data.x, data.edge_index
    ).total
    accuracies: dict[str, list[float]] = {"fp32": [], "default": []}
    for seed in range(runs):
        for config, scores in accuracies.items():
            torch.manual_seed(seed)
            model = build(data.num_features, num_classes(data))
            if config == "default":
                iexact.compress_(model, iexact.CompressionConfig())
            scores.append(100 * test_accuracy(model, data, learning_rate, epochs))
    fp32_score, score = (_mean_std(accuracies[config]) for config in ("fp32", "default"))
    return f"| {name} | {fp32 / 2**20:.2f} MiB | {fp32 / convs:.1f}× | {fp32 / kept:.1f}× | {fp32_score} | {score} |"


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cora", help="a dataset iexact loads (default: cora)")
    parser.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    parser.add_argument("--offline", action="store_true", help="never download")
    parser.add_argument("--runs", type=int, default=5, help="seeds per config (default: 5)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs per run (default: 200)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.root, download=not args.offline)
    print(f"{args.dataset}, {args.epochs} epochs, {args.runs} runs, {args.threads} threads")
    print()
    print("| example | FP32 | less, the convs alone | less, with the model's own code | FP32 | default |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in EXAMPLES:
        print(_row(name, data, args.runs, args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
