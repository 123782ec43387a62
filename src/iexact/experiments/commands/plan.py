"""``iexact plan``: the bits, block size and projection per layer that fit an
activation-memory budget with the least predicted gradient error, or that
keep the least memory measured within a gradient-error target."""

from __future__ import annotations

import argparse

import torch

from ...config import PRESETS
from ...memory import format_bytes
from ...planning import PlanError, candidate_configs
from ..errors import UsageError
from ..files import write_json_atomically
from ..job import Job, load_data
from ..plan import plan_record, summary
from . import arguments
from .outputs import Output, add_outputs


def register(commands) -> None:
    parser = commands.add_parser(
        "plan",
        help="the bits, block size and projection per layer that fit an activation-memory budget with the least "
        "predicted gradient error (or keep the least memory within a gradient-error target)",
    )
    arguments.add_data(parser)
    arguments.add_model(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--memory",
        type=arguments.size,
        help="activation memory allowed, as activation_memory counts it (e.g. 64MiB, 2GB, 500000)",
    )
    target.add_argument(
        "--max-error",
        type=arguments.number(0, low_open=True),
        help="instead of --memory: the gradient error against FP32 allowed (at initialization, as "
        "iexact.gradient_error measures it); the plan keeps the least memory measured within it",
    )
    arguments.add_compression(
        parser,
        tuple(PRESETS),
        "preset whose levels, projection kind, scale dtype, rp_norm and rp_edge_convs the plan keeps "
        "(default: default)",
        exclude=arguments.PLANNED_FIELDS,
    )
    arguments.add_seed(parser, "of the model and of synthetic graphs")
    arguments.add_draws(parser)
    arguments.add_runtime(parser, quiet=False)
    add_outputs(parser, Output("--out", "plan file to write (default: plan.json)", "plan.json"))
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    """Plan the compression within ``--memory``, check it, and write the plan file."""
    settings = arguments.settings_from(args)
    base = settings.config  # the fields the plan keeps
    assert base is not None  # --config names a preset
    # the sensitivities are measured against FP32 gradients: FP32 must fit once
    data = load_data(
        Job(settings, 1, device=str(args.device), root=str(args.root), offline=args.offline),
        fp32=True,
        hints=["a machine with more memory"],
    )
    goal = (
        f"activation budget {format_bytes(args.memory)}"
        if args.max_error is None
        else f"gradient error at most {args.max_error:g}"
    )
    print(
        f"dataset {args.dataset} ({data.num_nodes:,} nodes, {data.num_edges:,} edges), model {args.model}, "
        f"{goal}; measuring {len(candidate_configs(base))} "
        f"configs per layer (device {args.device}, {torch.get_num_threads()} threads)",
        flush=True,
    )
    try:
        record = plan_record(settings, data, args.device, (args.memory, args.max_error), args.draws)
    except PlanError:
        raise
    except ValueError as error:  # a model that compresses nothing
        raise UsageError(str(error)) from None
    write_json_atomically(args.out, record)
    given = ["--root", args.root] if args.root != "data" else []
    print(summary(record, args.out, given + (["--offline"] if args.offline else [])))
    print(f"plan written to {args.out}")
    return 0
