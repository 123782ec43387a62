r"""The command line's arguments, each declared once, in groups the commands share.

- **types**: argparse types that name the allowed values (:func:`positive_int`,
  :func:`number`, :func:`size`, :func:`block_size`, :func:`choices`,
  :func:`device`, :func:`seed`, :func:`fanout`);
- **groups**: :func:`add_data`, :func:`add_model`, :func:`add_compression`
  (``--config`` and one flag per :class:`~iexact.CompressionConfig` field,
  :data:`CONFIG_FLAGS`), :func:`add_training`, :func:`add_batching`,
  :func:`add_runtime` and the outputs (:mod:`~iexact.experiments.commands.outputs`);
- **settings**: :func:`settings_from` builds a run's
  :class:`~iexact.experiments.settings.Settings` from whatever of those a
  command has, the one place they are read.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from ...config import (
    ALLOWED_DROPOUT_MASKS,
    ALLOWED_LEVELS,
    ALLOWED_PROJECTIONS,
    PRESETS,
    SCALE_DTYPES,
    CompressionConfig,
)
from ...seeds import SEED_LIMIT
from ..batching import SAMPLERS, Batching
from ..data import GRAPH_LAYOUTS
from ..errors import UsageError
from ..limits import parse_bytes
from ..models import MODELS
from ..plan import MATCHED, check_plan_modules, read_plan, resolved
from ..precision import PRECISIONS
from ..settings import RunKind, Settings

FP32, CHECKPOINT = RunKind.FP32.value, RunKind.CHECKPOINTED.value  # the --config names of the uncompressed kinds


# ---- types ---------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def number(low: float, high: float = float("inf"), low_open: bool = False):
    """An argparse type for a float in ``[low, high)`` (``(low, high)`` when ``low_open``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value < high:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    return parse


def size(text: str) -> int:
    """Bytes, with an optional unit (``64MiB``, ``2GB``, ``500000``)."""
    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def block_size(text: str) -> int | str:
    """A positive integer or ``row``."""
    if text == "row":
        return "row"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'must be a positive integer or "row", got {text!r}') from None


def choices(allowed):
    """An argparse type for a comma-separated subset of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}: choose from {','.join(allowed)}"
            )
        return names

    return parse


def device(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, of a device torch sees."""
    try:
        value = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda or cuda:N") from None
    if value.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}: use cpu, cuda or cuda:N")
    if value.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda was asked for but torch sees no CUDA device")
    count = torch.cuda.device_count()
    if value.type == "cuda" and value.index is not None and value.index >= count:
        raise argparse.ArgumentTypeError(
            f"{text} was asked for but torch sees {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
        )
    return value


def seed(text: str) -> int:
    """An integer in ``[0, 2**62)``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**62), got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**62), got {value}")
    return value


def fanout(text: str) -> tuple[int, ...]:
    """Comma-separated neighbour counts, one per layer (-1: all)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, one per layer (e.g. 15,10,5; -1 for all neighbours), got {text!r}"
        ) from None


def default_device() -> torch.device:
    """CUDA when torch sees it, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---- groups --------------------------------------------------------------------------------------


def add_data(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    """``--dataset`` (with ``dataset``), ``--root`` and ``--offline``."""
    if dataset:
        parser.add_argument(
            "--dataset", default="synthetic", help="dataset name, see `iexact datasets` (default: synthetic)"
        )
    parser.add_argument("--root", default="data", help="directory holding the datasets (default: data)")
    parser.add_argument("--offline", action="store_true", help="never download missing dataset files")


def add_graph(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--graph",
        choices=GRAPH_LAYOUTS,
        default="edge_index",
        help="graph layout: edge_index as loaded, or csr (PyG's ToSparseTensor: a torch.sparse adjacency, "
        "aggregated without one message per edge); default: edge_index",
    )


def add_model(parser: argparse.ArgumentParser, sizes: bool = True, dropout: bool = True) -> None:
    """``--model`` and (as asked) ``--layers`` and ``--hidden``, ``--dropout``."""
    parser.add_argument("--model", choices=MODELS, default="sage", help="reference model (default: sage)")
    if sizes:
        parser.add_argument("--layers", type=positive_int, help="override the model's layer count")
        parser.add_argument("--hidden", type=positive_int, help="override the model's hidden width")
    if dropout:
        parser.add_argument("--dropout", type=number(0, 1), help="override the model's dropout")


CONFIG_FLAGS: dict[str, dict] = {
    "bits": dict(type=int, help="override the preset's bits (1, 2, 4, 8)"),
    "block_size": dict(type=block_size, help='override the block size (a positive integer or "row")'),
    "rp_ratio": dict(type=float, help="override the projection ratio (>= 1; 1: no projection)"),
    "levels": dict(help=f"override the levels ({', '.join(ALLOWED_LEVELS)})"),
    "scale_dtype": dict(choices=tuple(SCALE_DTYPES), help="override the dtype of the per-block scales"),
    "rp_norm": dict(action=argparse.BooleanOptionalAction, help="project BatchNorm inputs too (or not)"),
    "rp_edge_convs": dict(
        action=argparse.BooleanOptionalAction,
        help="project the node features of convs keeping per-edge tensors (attention, gates, EdgeConv) too (or not)",
    ),
    "projection": dict(choices=ALLOWED_PROJECTIONS, help="override the projection kind"),
    "reference_inputs": dict(
        action=argparse.BooleanOptionalAction, help="keep the caller's own inputs by reference (or compress them)"
    ),
    "check_finite": dict(
        action=argparse.BooleanOptionalAction, help="refuse NaN or Inf activations (a host sync per tensor)"
    ),
    "center": dict(
        action=argparse.BooleanOptionalAction, help="store activations centered on their column means (or not)"
    ),
    "dropout_masks": dict(
        choices=ALLOWED_DROPOUT_MASKS,
        help="keep dropout masks as bits (1 per element), as a generator seed to redraw them from, or auto "
        "(bits on CPU, the seed elsewhere)",
    ),
}
"""One flag per :class:`~iexact.CompressionConfig` field (``--block-size`` for
``block_size``), overriding the ``--config`` preset's value."""

PLANNED_FIELDS = ("bits", "block_size", "rp_ratio")  # what iexact plan chooses per module


def add_compression(parser: argparse.ArgumentParser, configs, text: str, exclude=()) -> None:
    """``--config`` (one of ``configs``) and the :data:`CONFIG_FLAGS`, but ``exclude``."""
    parser.add_argument("--config", choices=configs, default="default", help=text)
    for field, options in CONFIG_FLAGS.items():
        if field not in exclude:
            parser.add_argument("--" + field.replace("_", "-"), dest=field, default=None, **options)


def add_seed(parser: argparse.ArgumentParser, what: str = "of run 1 and of synthetic graphs") -> None:
    parser.add_argument("--seed", type=seed, default=0, help=f"seed {what}, in [0, 2**62) (default: 0)")


def add_training(parser: argparse.ArgumentParser, epochs: int = 200, optimizer: bool = True) -> None:
    """``--epochs``, ``--seed``, ``--lr`` and (with ``optimizer``) ``--precision``, ``--runs``,
    ``--weight-decay``, ``--grad-clip``."""
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs per run (default: {epochs})")
    add_seed(parser)
    parser.add_argument("--lr", type=number(0, low_open=True), default=0.01, help="Adam learning rate (default: 0.01)")
    if not optimizer:
        return
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="32: float32; bf16: the forward under torch.autocast in bfloat16; fp16: autocast in float16 with a "
        "GradScaler. Every run of a bench shares it: the FP32 row is then the autocast baseline (default: 32)",
    )
    parser.add_argument("--runs", type=positive_int, default=1, help="runs, seeds seed..seed+runs-1 (default: 1)")
    parser.add_argument("--weight-decay", type=number(0), default=0.0, help="Adam weight decay (default: 0)")
    parser.add_argument(
        "--grad-clip", type=number(0, low_open=True), default=0.5, help="max gradient norm (default: 0.5)"
    )


def add_draws(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--draws",
        type=positive_int,
        default=4,
        help="compressed backward passes per gradient-error measurement (default: 4)",
    )


def add_batching(parser: argparse.ArgumentParser, batch_size: bool = True) -> None:
    """``--batch-size`` (with ``batch_size``), ``--fanout`` and ``--sampler``."""
    if batch_size:
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            help="train on mini-batches: seed nodes per batch (neighbor) or nodes per part (random-node); "
            "default: full batch",
        )
    parser.add_argument(
        "--fanout",
        type=fanout,
        help="neighbours sampled per hop, one count per layer (e.g. 15,10,5; -1: all); neighbor sampler only",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, help="mini-batch sampler: PyG's NeighborLoader (default) or RandomNodeLoader"
    )


def add_runtime(
    parser: argparse.ArgumentParser, device_flag: bool = True, quiet: bool = True, memory_limit: bool = False
) -> None:
    """``--threads`` and (as asked) ``--device``, ``--quiet`` and ``--memory-limit``."""
    if device_flag:
        parser.add_argument(
            "--device", type=device, default=default_device(), help="cpu, cuda or cuda:N (default: cuda when available)"
        )
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's own choice)")
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if memory_limit:
        parser.add_argument(
            "--memory-limit",
            type=size,
            help="train under this address-space limit (e.g. 8GiB): an allocation beyond it stops the run "
            "with one line",
        )


# ---- settings ------------------------------------------------------------------------------------


def compression_from(args) -> tuple[RunKind, CompressionConfig | None, dict[str, CompressionConfig]]:
    """``(kind, config, configs by module)`` that ``--config``, its field flags
    and ``--plan`` (those of them the command has) ask for.

    Raises:
        UsageError: field flags beside an uncompressed ``--config`` or a plan,
            an invalid value, or a plan made for another run.
    """
    overrides = {field: getattr(args, field) for field in CONFIG_FLAGS if getattr(args, field, None) is not None}
    flags = sorted("--" + field.replace("_", "-") for field in overrides)
    if getattr(args, "plan", None) is not None:
        if args.config != "default" or flags:
            raise UsageError(f"--plan sets the compression of every layer: drop {', '.join(flags) or '--config'}")
        return RunKind.PLANNED, *_planned(args)
    if args.config in (FP32, CHECKPOINT):
        if flags:
            raise UsageError(
                f"--config {args.config} stores nothing compressed: drop {', '.join(flags)} or pick a compressed "
                f"--config"
            )
        return RunKind(args.config), None, {}
    try:
        return RunKind.COMPRESSED, dataclasses.replace(PRESETS[args.config], **overrides), {}
    except ValueError as error:
        raise UsageError(str(error)) from None


def _planned(args) -> tuple[CompressionConfig, dict[str, CompressionConfig]]:
    """``--plan FILE``: its base config and configs by module, for the model and
    dataset it was made for."""
    matched, base, modules = read_plan(args.plan)
    asked = resolved(vars(args))
    differing = [
        f"--{field} {matched[field]} (not {asked[field]})" for field in MATCHED if matched[field] != asked[field]
    ]
    if differing:
        raise UsageError(f"{args.plan} was made for {', '.join(differing)}: plan this run with iexact plan")
    check_plan_modules(args.plan, matched, base, modules)
    return base, modules


def batching_from(args) -> Batching | None:
    """``--batch-size/--fanout/--sampler`` as a :class:`Batching`, or ``None`` for full batch."""
    if getattr(args, "batch_size", None) is None:
        if getattr(args, "fanout", None) is not None or getattr(args, "sampler", None) is not None:
            raise UsageError("--fanout and --sampler need --batch-size (without it, training is full batch)")
        return None
    try:
        return Batching(args.batch_size, args.fanout, args.sampler or "neighbor")
    except ValueError as error:
        raise UsageError(str(error)) from None


def settings_from(args) -> Settings:
    """The :class:`Settings` of a run as the command's arguments describe it
    (what a command lacks takes the settings' default)."""
    kind, config, modules = compression_from(args)
    fields = ("layers", "hidden", "dropout", "lr", "weight_decay", "grad_clip", "graph", "precision")
    optional = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    return Settings(
        dataset=args.dataset,
        model=args.model,
        kind=kind,
        label=args.config if kind is not RunKind.PLANNED else RunKind.PLANNED.value,
        config=config,
        seed=args.seed,
        batching=batching_from(args),
        module_configs=tuple(modules.items()),
        **optional,
    )
