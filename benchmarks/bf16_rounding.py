r"""What bf16 autocast does to a gradient, compressed or not: ``python benchmarks/bf16_rounding.py``.

Prints a Markdown table: for each reference model on a dataset, at
initialization (the training loss on the training nodes, dropout masks
alike), the relative error :math:`\lVert g_{bf16} - g_{32} \rVert / \lVert
g_{32} \rVert` of the uncompressed model's whole gradient under
``torch.autocast`` in bfloat16 against float32 (the noise floor a
mixed-precision user already trains with), then the default config's
gradient error (:func:`iexact.gradient_error`, ``--draws`` draws) without
autocast and under it, against the uncompressed model under the same
autocast.
"""

from __future__ import annotations

import argparse
import sys

import torch

import iexact
from iexact.experiments.data import load_dataset, num_classes
from iexact.experiments.models import MODELS, build_model
from iexact.experiments.train import labels_of, loss_function


def _gradient(model, data, autocast: bool) -> torch.Tensor:
    model.zero_grad()
    rows, labels = data.train_mask.nonzero().view(-1), labels_of(data)
    torch.manual_seed(0)  # the same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_function(model(data.x, data.edge_index)[rows], labels[rows])
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _default_error(model, data, autocast: bool, draws: int) -> float:
    rows, labels = data.train_mask.nonzero().view(-1), labels_of(data)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return iexact.gradient_error(
            model,
            data.x,
            data.edge_index,
            loss_fn=lambda out: loss_function(out[rows], labels[rows]),
            config=iexact.CompressionConfig(),
            draws=draws,
        ).whole


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", help="dataset, repeatable (default: synthetic and Cora)")
    parser.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    parser.add_argument("--models", default="sage,gcn", help="reference models, comma-separated (default: sage,gcn)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--draws", type=int, default=4, help="compressed backward passes per error (default: 4)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    unknown = [name for name in models if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: use {', '.join(MODELS)}")
    print(f"torch {torch.__version__}, {args.threads} threads, CPU\n")
    print(
        "| dataset | model | bf16 autocast gradient against float32 | default's error, float32 | "
        "default's error under bf16 autocast |\n|---|---|---:|---:|---:|"
    )
    for dataset in args.dataset or ["synthetic", "Cora"]:
        data = load_dataset(dataset, root=args.root)
        for name in models:
            torch.manual_seed(0)
            model = build_model(name, data.num_features, num_classes(data))
            exact = _gradient(model, data, autocast=False)
            rounded = _gradient(model, data, autocast=True)
            errors = [_default_error(model, data, autocast, args.draws) for autocast in (False, True)]
            print(
                f"| {dataset} | {name} | {((rounded - exact).norm() / exact.norm()).item():.3f} | "
                f"{errors[0]:.3f} | {errors[1]:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
