"""``iexact analyze``: the compressed activations' distributions, rounding
variance and gradient error per layer, with figures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...config import PRESETS
from ..analyze import analysis_record, summary, write_report
from ..job import Job, load_data
from ..progress import Progress
from . import arguments
from .outputs import Output, add_outputs


def register(commands) -> None:
    parser = commands.add_parser(
        "analyze",
        help="the compressed activations' distributions, rounding variance and gradient error per layer, with figures",
    )
    arguments.add_data(parser)
    arguments.add_model(parser)
    arguments.add_compression(parser, tuple(PRESETS), "compression preset (default: default)")
    arguments.add_training(parser, epochs=5, optimizer=False)
    parser.add_argument(
        "--checkpoint", help="analyze the model of this iexact train checkpoint instead (made with the same settings)"
    )
    arguments.add_draws(parser)
    arguments.add_runtime(parser)
    add_outputs(
        parser,
        Output(
            "--out",
            "folder for analyze.json, analyze.md and figures",
            "analyze-results",
            results=("analyze.json", "analyze.md"),
        ),
    )
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    """Train a few epochs (or load ``--checkpoint``), then write the analysis to ``--out``."""
    settings = arguments.settings_from(args)
    job = Job(settings, args.epochs, device=str(args.device), root=str(args.root), offline=args.offline)
    data = load_data(job)
    progress = Progress(settings.label, args.epochs, 1, not args.quiet and args.checkpoint is None)
    record, analyses = analysis_record(settings, data, args.device, args.epochs, args.checkpoint, args.draws, progress)
    print(summary(record))
    try:
        written = write_report(record, analyses, args.out)
    except ImportError as error:
        print(f"iexact analyze: no figures: {error}", file=sys.stderr)
        written = [Path(args.out) / "analyze.json", Path(args.out) / "analyze.md"]
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
