r"""``iexact analyze``: why the compression works on your model and data.

After a few training epochs (or from a checkpoint), every tensor one training
forward compresses is put on its blocks' normalized axis and compared with
the uniform, normal and clipped-normal distributions
(:func:`iexact.analysis.analyze_activations`); its rounding variance on the
data is set beside the clipped-normal model's prediction for uniform and
optimal levels; and the gradient's error against FP32 is measured per
parameter (:func:`iexact.gradient_error`). Written to ``--out``:
``analyze.json``, ``analyze.md`` and three figures (``histograms.png``,
``variance.png``, ``gradient_error.png``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from ..analysis import (
    DISTRIBUTIONS,
    analyze_activations,
    calibrate_,
    calibration_state,
    gradient_error,
    load_calibration_state_,
)
from ..quant import clipped_normal_sigma
from .checkpoint import load_checkpoint
from .data import graph_of
from .files import write_json_atomically, write_text_atomically
from .models import prepare_model
from .settings import Settings
from .train import TrainingState, labels_of, loss_function, train_epochs


def analysis_record(
    settings: Settings, data, device: torch.device, epochs: int, checkpoint: str | None, draws: int, after_epoch=None
) -> tuple[dict, list]:
    """Train ``epochs`` epochs (or load the model of ``checkpoint``, an ``iexact train``
    checkpoint made with the same settings), then analyze; returns the JSON-ready
    record and the :class:`~iexact.analysis.ActivationAnalysis` list (with samples)."""
    torch.manual_seed(settings.seed)
    model = prepare_model(settings, data, device)
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint, settings)
        model.load_state_dict(saved["model"])
        load_calibration_state_(model, saved.get("levels", {}))
        trained = "checkpoint"
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        train_epochs(
            model,
            optimizer,
            data,
            TrainingState(),
            epochs,
            settings.grad_clip,
            None if after_epoch is None else (lambda state: after_epoch(0, state)),
        )
        trained = f"{epochs} epochs"
    if settings.config is not None and settings.config.levels == "calibrated" and not calibration_state(model):
        calibrate_(model, data.x, graph_of(data))
    analyses = analyze_activations(model, data.x, graph_of(data))
    labels, rows = labels_of(data), data.train_mask.nonzero().view(-1)
    error = gradient_error(
        model, data.x, graph_of(data), draws=draws, loss_fn=lambda out: loss_function(out[rows], labels[rows])
    )
    record = {
        **settings.to_dict(),
        "trained": trained,
        "activations": [
            {
                field.name: getattr(a, field.name)
                for field in dataclasses.fields(a)
                if field.name not in ("sample", "fits")
            }
            | {"fits": {name: dataclasses.asdict(fit) for name, fit in a.fits.items()}, "shape": list(a.shape)}
            for a in analyses
        ],
        "gradient_error": {
            "whole": error.whole,
            "of_mean": error.of_mean,
            "draws": error.draws,
            "per_parameter": error.per_parameter,
        },
    }
    return record, analyses


def summary(record: dict) -> str:
    """The Markdown summary of an :func:`analysis_record`."""
    activations = record["activations"]
    config = record["config"]
    lines = [
        f"# {record['model']} on {record['dataset']}, trained {record['trained']}, "
        f"INT{config['bits']} blocks of {config['block_size']}, {config['levels']} levels",
        "",
        "Block-normalized values v = (z − m)/(M − m) of every tensor one training forward compresses, "
        "against three distributions (Kolmogorov–Smirnov statistic / Wasserstein-1 distance on [0, 1]; "
        "clipped normal: the levels' model N(1/2, σ_G²), nothing fitted).",
        "",
        "| layer | kind | shape | uniform KS / W1 | normal KS / W1 | clipped normal KS / W1 | closest |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for a in activations:
        fits = a["fits"]
        closest = min(DISTRIBUTIONS, key=lambda name: fits[name]["ks"])
        lines.append(
            f"| {a['layer'] or '(model)'} | {a['kind']} | {' × '.join(map(str, a['shape']))} | "
            + " | ".join(f"{fits[name]['ks']:.3f} / {fits[name]['wasserstein']:.4f}" for name in DISTRIBUTIONS)
            + f" | {closest.replace('_', ' ')} |"
        )
    beats = sum(a["fits"]["clipped_normal"]["ks"] < a["fits"]["uniform"]["ks"] for a in activations)
    lines += [
        "",
        f"The clipped normal is closer than the uniform distribution (KS) for {beats} of "
        f"{len(activations)} compressed tensors.",
        "",
        "Rounding variance per element, in units of (step/B)²: the clipped-normal model's prediction "
        "and the expectation on these values.",
        "",
        "| layer | uniform: model | uniform: data | optimal: model | optimal: data | optimal vs uniform (data) | "
        "calibrated to the tensor: data | vs optimal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in activations:
        v = a["variance"]
        cut = 1 - v["optimal"]["data"] / v["uniform"]["data"] if v["uniform"]["data"] else 0.0
        calibrated = v["calibrated"]["data"]
        beyond = 1 - calibrated / v["optimal"]["data"] if v["optimal"]["data"] else 0.0
        lines.append(
            f"| {a['layer'] or '(model)'} | {v['uniform']['model']:.4f} | {v['uniform']['data']:.4f} | "
            f"{v['optimal']['model']:.4f} | {v['optimal']['data']:.4f} | {100 * cut:.1f} % less | "
            f"{calibrated:.4f} | {100 * beyond:.1f} % less |"
        )
    error = record["gradient_error"]
    lines += [
        "",
        f"Gradient error against FP32 (relative, mean of {error['draws']} draws): whole "
        f"{error['whole']:.3f}, of their mean {error['of_mean']:.3f}.",
        "",
        "| parameter | relative error |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in error["per_parameter"].items()]
    return "\n".join(lines) + "\n"


def write_figures(record: dict, analyses: list, folder: Path) -> list[Path]:
    """``histograms.png``, ``variance.png``, ``gradient_error.png`` in ``folder``
    (matplotlib's object API: no backend or global figure state is touched).

    Raises:
        ImportError: matplotlib is missing (``pip install "iexact[plot]"``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('figures need matplotlib: pip install "iexact[plot]"') from None
    written = []
    columns = min(3, max(len(analyses), 1))
    rows = max(1, math.ceil(len(analyses) / columns))
    figure = Figure(figsize=(4 * columns, 3 * rows), layout="tight")
    grid = np.linspace(0, 1, 201)
    for index, a in enumerate(analyses):
        axes = figure.add_subplot(rows, columns, index + 1)
        values = a.sample.numpy()
        axes.hist(values, bins=60, range=(0, 1), density=True, color="0.75", label="data")
        spread = clipped_normal_sigma(a.bits, a.block_size) / (2**a.bits - 1)
        axes.plot(grid, np.ones_like(grid), label="uniform")
        axes.plot(grid, stats.norm.pdf(grid, values.mean(), max(values.std(), 1e-12)), label="normal (fitted)")
        axes.plot(grid, stats.norm.pdf(grid, 0.5, spread), label="clipped normal (model)")
        axes.set_title(f"{a.layer or 'model'} ({a.kind})", fontsize=8)
        axes.set_xlabel("v = (z − m) / (M − m)", fontsize=7)
        if index == 0:
            axes.legend(fontsize=6)
    written.append(folder / "histograms.png")
    figure.savefig(written[-1], dpi=110)

    figure = Figure(figsize=(max(6, 0.9 * len(analyses) + 2), 3.5), layout="tight")
    axes = figure.add_subplot()
    positions = np.arange(len(analyses))
    for offset, (kind, source) in enumerate([(k, s) for k in ("uniform", "optimal") for s in ("model", "data")]):
        heights = [a.variance[kind][source] for a in analyses]
        axes.bar(positions + (offset - 1.5) * 0.2, heights, width=0.2, label=f"{kind} levels: {source}")
    axes.set_xticks(positions, [a.layer or "model" for a in analyses], rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("rounding variance, (step/B)²")
    axes.legend(fontsize=7)
    written.append(folder / "variance.png")
    figure.savefig(written[-1], dpi=110)

    per_parameter = record["gradient_error"]["per_parameter"]
    figure = Figure(figsize=(max(6, 0.35 * len(per_parameter) + 2), 3.5), layout="tight")
    axes = figure.add_subplot()
    axes.bar(range(len(per_parameter)), list(per_parameter.values()), color="C3")
    axes.set_xticks(range(len(per_parameter)), list(per_parameter), rotation=60, ha="right", fontsize=6)
    axes.set_ylabel("relative gradient error vs FP32")
    written.append(folder / "gradient_error.png")
    figure.savefig(written[-1], dpi=110)
    return written


def write_report(record: dict, analyses: list, folder: str | Path) -> list[Path]:
    """``analyze.json`` and ``analyze.md`` (atomically) and the figures; returns the paths."""
    folder = Path(folder)
    write_json_atomically(folder / "analyze.json", record)
    write_text_atomically(folder / "analyze.md", summary(record))
    return [folder / "analyze.json", folder / "analyze.md", *write_figures(record, analyses, folder)]
