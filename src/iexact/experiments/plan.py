r"""``iexact plan``: the compression that fits an activation-memory budget.

:func:`plan_record` plans a reference model at initialization on the full
graph (:func:`iexact.planning.plan_memory`), then checks the plan by
measuring what it predicts: :func:`iexact.activation_memory` and
:func:`iexact.gradient_error` of the planned model. The plan file (JSON,
:data:`PLAN_FORMAT`) holds the base config and one config per module;
``iexact train --plan FILE`` trains with it (:func:`read_plan`).
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import torch

from ..analysis import gradient_error
from ..config import CompressionConfig
from ..memory import activation_memory, format_bytes
from ..nn import compress_, module_configs
from ..planning import plan_memory
from .data import graph_of, num_classes
from .errors import UsageError
from .models import REFERENCE, build_model
from .settings import Settings
from .train import labels_of, loss_function

PLAN_FORMAT = "iexact-plan-1"
MATCHED = ("dataset", "model", "layers", "hidden")  # what a plan is only valid for


class PlanFileError(UsageError):
    """A plan file that cannot be used (named, with the problem)."""


def resolved(settings: dict) -> dict:
    """The fields of :data:`MATCHED` with the model's defaults filled in."""
    spec = REFERENCE[settings["model"]]
    return {
        "dataset": settings["dataset"],
        "model": settings["model"],
        "layers": settings["layers"] or spec.layers,
        "hidden": settings["hidden"] or spec.hidden,
    }


def plan_record(settings: Settings, data, device: torch.device, target: tuple, draws: int) -> dict:
    """Plan ``settings``' model (initialized with its seed) for ``target`` =
    ``(budget, max_error)`` (one of them ``None``: within ``budget`` bytes, or
    the least bytes within ``max_error``), measure the planned model, and
    return the plan file's record.

    Raises:
        iexact.planning.PlanError: no plan fits the budget (or is measured within the error).
    """
    budget, max_error = target
    torch.manual_seed(settings.seed)
    model = build_model(
        settings.model, data.num_features, num_classes(data), settings.layers, settings.hidden, settings.dropout
    ).to(device)
    labels, rows = labels_of(data), data.train_mask.nonzero().view(-1)

    def loss_fn(out):
        return loss_function(out[rows], labels[rows])

    graph = graph_of(data)
    plan = plan_memory(
        model,
        data.x,
        graph,
        loss_fn=loss_fn,
        budget=budget,
        max_error=max_error,
        base=settings.config,
        draws=draws,
        seed=settings.seed,
    )
    planned = plan.apply_(model)
    measured_bytes = activation_memory(planned, data.x, graph)
    measured_error = gradient_error(planned, data.x, graph, loss_fn=loss_fn, draws=draws, seed=settings.seed)
    return {
        "format": PLAN_FORMAT,
        **resolved(settings.to_dict()),
        "seed": settings.seed,
        "budget": budget,
        "max_error": max_error,
        "base": plan.base.to_dict(),
        "modules": {module.name: module.config.to_dict() for module in plan.modules},
        "predicted": _predicted(plan),
        "measured": {
            "bytes": measured_bytes.total,
            "gradient_error": measured_error.whole,
            "draws": measured_error.draws,
        },
        "fp32_bytes": plan.fp32_bytes,
        "uniform": None
        if plan.uniform is None
        else {
            "config": plan.uniform.config.to_dict(),
            "bytes": plan.uniform.bytes,
            "gradient_error": plan.uniform.gradient_error,
        },
    }


def _predicted(plan) -> dict:
    """The plan file's ``predicted``: the plan's bytes and error, per layer and whole."""
    return {
        "bytes": plan.bytes,
        "gradient_error": plan.gradient_error,
        "layers": [
            {"name": module.name, "type": module.kind, "bytes": module.bytes, "squared_error": module.squared_error}
            for module in plan.modules
        ],
        "fixed": plan.fixed,
    }


def _config_text(config: dict) -> tuple[str, str, str]:
    ratio = config["rp_ratio"]
    return f"INT{config['bits']}", str(config["block_size"]), "none" if ratio == 1 else f"{ratio:g}"


def summary(record: dict, plan_path: str, data_arguments: list[str]) -> str:
    """The plan as a table, predicted beside measured, and the commands that
    train with it (``data_arguments``: ``--root`` and the like, as given)."""
    predicted, measured = record["predicted"], record["measured"]
    lines = [
        "| layer | type | bits | block | projection | predicted bytes | predicted gradient error² |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for layer in predicted["layers"]:
        bits, block, ratio = _config_text(record["modules"][layer["name"]])
        lines.append(
            f"| {layer['name']} | {layer['type']} | {bits} | {block} | {ratio} | {layer['bytes']:,} | "
            f"{layer['squared_error']:.4f} |"
        )
    for name, nbytes in predicted["fixed"].items():
        lines.append(f"| {name} | (no choice) | | | | {nbytes:,} | |")
    off = 100 * (predicted["bytes"] - measured["bytes"]) / max(measured["bytes"], 1)
    budget = record["budget"]
    target = f"budget {format_bytes(budget)}" if budget is not None else f"error target {record['max_error']:g}"
    lines += [
        "",
        f"activation memory: predicted {predicted['bytes']:,} B ({format_bytes(predicted['bytes'])}), measured "
        f"{measured['bytes']:,} B ({off:+.2f} %); {target}; FP32 keeps "
        f"{format_bytes(record['fp32_bytes'])} ({record['fp32_bytes'] / max(measured['bytes'], 1):.1f}x more)",
        f"gradient error against FP32: predicted {predicted['gradient_error']:.3f}, measured "
        f"{measured['gradient_error']:.3f} (mean of {measured['draws']} draws, at initialization)",
    ]
    base = ["iexact", "train", "--dataset", record["dataset"], *data_arguments, "--model", record["model"]]
    reference = REFERENCE[record["model"]]
    base += [] if record["layers"] == reference.layers else ["--layers", str(record["layers"])]
    base += [] if record["hidden"] == reference.hidden else ["--hidden", str(record["hidden"])]
    lines.append("train with: " + shlex.join(base + ["--plan", plan_path]))
    uniform = record["uniform"]
    if uniform is None:
        lines.append(f"no single config for every layer meets the {'budget' if budget is not None else 'target'}")
    else:
        config = uniform["config"]
        bits, block, ratio = _config_text(config)
        lines.append(
            f"the best single config for every layer ({bits}, blocks of {block}, projection {ratio}) "
            f"keeps {format_bytes(uniform['bytes'])} with a predicted gradient error of "
            f"{uniform['gradient_error']:.3f}: "
            + shlex.join(
                base
                + [
                    "--bits",
                    str(config["bits"]),
                    "--block-size",
                    str(config["block_size"]),
                    "--rp-ratio",
                    f"{config['rp_ratio']:g}",
                ]
            )
        )
    return "\n".join(lines)


def read_plan(path: str) -> tuple[dict, CompressionConfig, dict[str, CompressionConfig]]:
    """``(matched fields, base config, configs by module name)`` of a plan file,
    its schema checked: the format (:data:`PLAN_FORMAT`; a newer one named),
    the fields of :data:`MATCHED`, the base config and one config per module.

    Raises:
        FileNotFoundError: no such file.
        PlanFileError: a directory, not JSON, or not a valid plan file (the problem named).
    """
    record = _plan_json(Path(path))
    version = record.get("format") if isinstance(record, dict) else None
    if isinstance(version, str) and version.startswith("iexact-plan-") and version != PLAN_FORMAT:
        raise PlanFileError(f"{path} is a plan file of format {version!r}; this iexact reads {PLAN_FORMAT!r}")
    if version != PLAN_FORMAT:
        raise PlanFileError(f"{path} is no iexact plan file (format {PLAN_FORMAT}): write one with iexact plan")
    kinds = {"dataset": str, "model": str, "layers": int, "hidden": int, "base": dict, "modules": dict}
    wrong = [f"{field} ({kind.__name__})" for field, kind in kinds.items() if not isinstance(record.get(field), kind)]
    if wrong:
        raise PlanFileError(f"{path} is an invalid iexact plan file: missing or malformed {', '.join(wrong)}")
    try:
        base = CompressionConfig.from_dict(record["base"])
        modules = {str(name): CompressionConfig.from_dict(config) for name, config in record["modules"].items()}
    except ValueError as error:
        raise PlanFileError(f"{path} is an invalid iexact plan file: {error}") from None
    return {field: record[field] for field in MATCHED}, base, modules


def _plan_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"plan file {path} does not exist (write one with iexact plan)")
    if path.is_dir():
        raise PlanFileError(f"{path} is a directory, not a plan file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PlanFileError(f"{path} is no iexact plan file: it is not JSON (write one with iexact plan)") from None
    except OSError as error:
        raise PlanFileError(f"plan file {path} cannot be read: {error.strerror}") from None


def check_plan_modules(path: str, matched: dict, base: CompressionConfig, modules: dict) -> None:
    """Refuse, before any data loads, a plan naming modules the reference model
    it was made for does not compress (the model built with placeholder
    channel counts: module names do not depend on them).

    Raises:
        PlanFileError: the unknown names, with the model's compressed modules.
    """
    model = build_model(matched["model"], 1, 2, matched["layers"], matched["hidden"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model's unconverted modules are not this check's business
        compressed = module_configs(compress_(model, base))
    unknown = sorted(set(modules) - set(compressed))
    if unknown:
        raise PlanFileError(
            f"{path} configures {', '.join(unknown)}, which {matched['model']} with {matched['layers']} layers does "
            f"not compress (it compresses {', '.join(compressed)}): plan this run again with iexact plan"
        )
