"""The ``iexact`` command: ``datasets``, ``train``, ``analyze``, ``plan`` and
``bench {train,batch-size,gradients,memory,codec}``."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from ..planning import PlanError
from .checkpoint import CheckpointError
from .commands import COMMANDS
from .commands.outputs import check_outputs
from .errors import UsageError
from .estimate import NotEnoughMemory
from .limits import is_out_of_memory, out_of_memory_message
from .train import TrainingFailed
from .validation import DatasetError

FAILURES = (CheckpointError, DatasetError, ImportError, TrainingFailed, NotEnoughMemory, PlanError)
"""What stops a command with one line and exit status 1 (the data, a file or the run, not the arguments);
so does an ``OSError`` (a file missing, or one that could not be written: never reported as success)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iexact", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """A flag is spelled out on every parser (``--epoch`` is no ``--epochs``,
    ``--config`` no ``--configs``): argparse would otherwise take any prefix."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def main(argv: list[str] | None = None) -> int:
    """Run the command. Usage errors (bad arguments, outputs that may not be
    written, settings the data cannot take) exit with status 2 after the
    usage line; missing files, bad checkpoints, failed runs return 1 after one
    line on stderr; Ctrl-C returns 130 and says what was left."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        check_outputs(args)
        return args.run(args)
    except UsageError as error:
        parser: argparse.ArgumentParser = args.parser
        parser.error(str(error))
    except KeyboardInterrupt:
        interrupted = getattr(args, "interrupted", None)
        left = "nothing was written" if interrupted is None else interrupted(args, argv)
        print(f"iexact {args.command}: interrupted; {left}", file=sys.stderr)
        return 130
    except FAILURES as error:
        print(f"iexact {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # ours carry a sentence; the system's a reason and a file
        told = str(error) if error.strerror is None else f"{error.strerror}: {error.filename}"
        print(f"iexact {args.command}: error: {told}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        print(f"iexact {args.command}: error: {out_of_memory_message(error)}", file=sys.stderr)
        return 1


def run() -> int:
    """The console entry point: :func:`main` in a process of its own, whose
    environment it may set (the profiler's Kineto backend otherwise prints
    two log lines every time the allocator is cross-checked)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    return main()


if __name__ == "__main__":
    sys.exit(run())
