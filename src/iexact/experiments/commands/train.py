"""``iexact train``: train a reference model with compressed activations (in a
``torchrun`` job of several processes, data-parallel; rank 0 prints and writes)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch

from ...config import PRESETS
from .. import distributed
from ..errors import UsageError
from ..files import write_json_atomically
from ..job import Job, run_job
from ..records import describe
from ..settings import Settings
from . import arguments
from .outputs import Output, add_outputs

OUTPUTS = (
    Output("--json", "write the results to this JSON file", resumable=True),
    Output(
        "--checkpoint",
        "checkpoint file: written at the end of every run (and every --save-every epochs), "
        "or resumed from with --resume",
        resumable=True,
    ),
)


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a reference model with compressed activations")
    add_experiment_arguments(parser)
    arguments.add_compression(
        parser,
        (arguments.FP32, *PRESETS, arguments.CHECKPOINT),
        "compression preset; fp32 for none, checkpoint for torch.utils.checkpoint around every message-passing "
        "layer (default: default)",
    )
    parser.add_argument(
        "--plan",
        help="train with the per-layer compression of this iexact plan file (made for the same dataset, model, "
        "layers and hidden width)",
    )
    add_outputs(parser, *OUTPUTS, resume=True)
    parser.add_argument("--save-every", type=arguments.positive_int, help="save a checkpoint every N epochs")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.set_defaults(run=run, parser=parser, interrupted=interrupted)


def add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``train`` and ``bench train`` share: data, model, training, batching and runtime."""
    arguments.add_data(parser)
    arguments.add_model(parser)
    arguments.add_training(parser)
    arguments.add_batching(parser)
    arguments.add_graph(parser)
    arguments.add_runtime(parser, memory_limit=True)


def job_from(args: argparse.Namespace, settings: Settings) -> Job:
    """The :class:`Job` of ``settings`` as the command's arguments say to run it."""
    return Job(
        settings=settings,
        epochs=args.epochs,
        runs=args.runs,
        device=str(args.device),
        root=str(args.root),
        offline=args.offline,
        quiet=args.quiet,
        memory_limit=args.memory_limit,
        threads=args.threads,
        checkpoint=getattr(args, "checkpoint", None),
        save_every=getattr(args, "save_every", None) or 0,
        resume=getattr(args, "resume", False),
    )


def run(args: argparse.Namespace) -> int:
    """Train; rank 0 prints the record and writes ``--json``."""
    if (args.save_every or args.resume) and args.checkpoint is None:
        raise UsageError("--save-every and --resume need --checkpoint PATH")
    try:
        ranks = distributed.ranks_from_environment()
        if ranks is not None:
            args.device = distributed.rank_device(ranks, args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    settings = arguments.settings_from(args)
    job = job_from(args, settings)
    record = run_job(job, ranks, announce=lambda data: print(_heading(args, settings, data, ranks)))
    if record is None:  # a rank other than 0
        return 0
    print(describe(record))
    if args.json:
        write_json_atomically(args.json, record)
        print(f"results written to {args.json}")
    return 0


def _heading(args, settings: Settings, data, ranks) -> str:
    """What trains, where: the line printed before the progress bars."""
    config = settings.config
    if settings.module_configs:
        compression = f"the plan of {args.plan} ({len(settings.module_configs)} layers; base {config}), "
    else:
        compression = f"config {settings.label}{f' ({config})' if config else ''}, "
    batching = settings.batching
    if batching is None:
        batches = "full batch"
    else:
        batches = f"{batching.sampler} batches of {batching.batch_size}"
        batches += f", fanout {','.join(map(str, batching.fanout))}" if batching.fanout else ""
    parallel = "" if ranks is None else f", {ranks.world_size} processes (DistributedDataParallel)"
    return (
        f"dataset {settings.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges, {data.num_features} "
        f"features), model {settings.model}, {compression}{batches}, device {args.device}, "
        f"{torch.get_num_threads()} threads{parallel}"
    )


def interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    """How to resume an interrupted training."""
    if args.checkpoint is None or not Path(args.checkpoint).is_file():
        return "nothing to resume from (no checkpoint saved; --checkpoint PATH --save-every N keep one)"
    again = [part for part in argv if part != "--overwrite"] + ([] if args.resume else ["--resume"])
    return "resume with: iexact " + shlex.join(again)
