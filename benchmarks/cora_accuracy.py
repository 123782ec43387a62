"""Test accuracy on Cora: FP32 against each compression config, same seeds.

Stock PyG models (2 layers, hidden 64, dropout 0.5), Adam lr 0.01, weight
decay 5e-4, 200 epochs, test accuracy at the best validation epoch, mean and
standard deviation over seeds. Cora is read from ``--root`` (PyG's
Planetoid layout: ``<root>/Cora/raw/ind.cora.*``); copy it somewhere
writable first, PyG writes ``processed/`` beside ``raw/``.

    python benchmarks/cora_accuracy.py --root /tmp/data [--seeds 5] [--epochs 200]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch_geometric.datasets import Planetoid
from torch_geometric.nn.models import GCN, GraphSAGE
from torch_geometric.transforms import NormalizeFeatures

import iexact
from iexact import CompressionConfig
from iexact.train import train_full_batch

MODELS = {
    "GCN": lambda features: GCN(features, 64, num_layers=2, out_channels=7, dropout=0.5),
    "GraphSAGE": lambda features: GraphSAGE(features, 64, num_layers=2, out_channels=7, dropout=0.5),
    "GraphSAGE + BatchNorm": lambda features: GraphSAGE(features, 64, num_layers=2, out_channels=7,
                                                        dropout=0.5, norm="batch"),
}
CONFIGS = {
    "FP32": None,
    "exact()": CompressionConfig.exact(),
    "iexact()": CompressionConfig.iexact(),
    "default": CompressionConfig.default(),
    "default, rp_norm=True": CompressionConfig(rp_norm=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    data = Planetoid(args.root, "Cora", transform=NormalizeFeatures())[0]
    print(f"Cora, {args.epochs} epochs, test accuracy (%) at best validation, mean ± std over {args.seeds} seeds; "
          f"torch {torch.__version__}\n")
    print("| model | " + " | ".join(CONFIGS) + " |")
    print("|---|" + "---:|" * len(CONFIGS))
    for model_name, make_model in MODELS.items():
        cells = []
        for config in CONFIGS.values():
            if config is not None and config.rp_norm and "BatchNorm" not in model_name:
                cells.append("(no BatchNorm)")
                continue
            accuracies = []
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = make_model(data.num_features)
                if config is not None:
                    iexact.compress_(model, config)
                accuracies.append(100 * train_full_batch(model, data, epochs=args.epochs).test_accuracy)
            cells.append(f"{statistics.mean(accuracies):.1f} ± {statistics.stdev(accuracies):.1f}")
        print(f"| {model_name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
