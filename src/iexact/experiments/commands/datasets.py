"""``iexact datasets``: list the dataset names, or build one with ``--prepare``."""

from __future__ import annotations

import argparse

from ..data import DATASETS, GRAPH_LAYOUTS, load_prepared, synthetic_cache
from ..errors import UsageError
from ..estimate import check_fits, least_bytes
from ..files import check_writable
from ..validation import DatasetError
from . import arguments


def register(commands) -> None:
    parser = commands.add_parser("datasets", help="list the dataset names, or build one with --prepare")
    parser.add_argument(
        "--prepare",
        metavar="NAME",
        help="build (or check) this dataset under --root as training reads it, caching a large synthetic graph",
    )
    arguments.add_data(parser, dataset=False)
    arguments.add_seed(parser, "of synthetic graphs")
    parser.add_argument("--graph", choices=GRAPH_LAYOUTS, default="edge_index", help="graph layout to build")
    arguments.add_runtime(parser, device_flag=False, quiet=False)
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    """List the names, or with ``--prepare NAME`` build (or check) that dataset
    under ``--root`` as training will read it."""
    if args.prepare is None:
        print("datasets (--dataset), read from --root:")
        for name in DATASETS:
            print(f"  {name}")
        return 0
    name = args.prepare
    try:  # the data and the build alone: no model, no activations
        path = synthetic_cache(name, args.root, args.seed, args.graph)
        if path is not None:  # the cache is this command's output: probed before the build
            check_writable(path, "--root")
        parts = least_bytes(name, "sage", None, None, True, False, args.graph, args.root, args.seed)
        check_fits(parts, f"building {name}", ["a machine with more memory"])
        data = load_prepared(name, args.root, download=not args.offline, seed=args.seed, layout=args.graph)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if path is not None and not path.is_file():
        raise DatasetError(f"{name} was built but could not be cached at {path} (the warning above says why)")
    if path is not None:
        where = f"cached at {path}"
    elif name.lower().startswith("synthetic"):
        where = "built again by every run (small enough)"
    else:
        where = f"ready under {args.root}"
    print(
        f"{name}: {data.num_nodes:,} nodes, {data.num_edges:,} edges, {data.num_features} features, "
        f"--graph {args.graph}; {where}"
    )
    return 0
