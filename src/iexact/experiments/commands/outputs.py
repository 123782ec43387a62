r"""What a command writes, declared once and checked by one rule before any work.

A command declares its outputs (:class:`Output`: a file flag such as ``--json``,
or a folder flag such as ``--out`` with the result files it writes there) with
:func:`add_outputs`, which also gives it ``--overwrite``. Before the command
loads or trains anything, :func:`check_outputs`:

- checks that every output can be written (a file's folder exists or can be
  made and takes a file; a folder is no file);
- refuses to replace an existing result without ``--overwrite`` (a checkpoint,
  and the JSON that goes with it, also with ``--resume``, which continues it);
- refuses two outputs that name one file;
- removes the temporaries that killed writers left beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..errors import UsageError
from ..files import OutputError, check_folder, check_writable, refuse_overwrite, remove_stale_temporaries


@dataclasses.dataclass(frozen=True)
class Output:
    """One output flag: ``flag`` names a file, or with ``results`` a folder
    holding those result files; ``resumable`` outputs may exist under ``--resume``."""

    flag: str
    help: str
    default: str | None = None
    results: tuple[str, ...] = ()
    resumable: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def files(self, value: str) -> list[Path]:
        """The files this output writes when given ``value``."""
        return [Path(value) / name for name in self.results] if self.results else [Path(value)]


def add_outputs(parser: argparse.ArgumentParser, *outputs: Output, resume: bool = False) -> None:
    """Declare ``outputs`` and ``--overwrite`` (and, with ``resume``, say so in its help)."""
    for output in outputs:
        parser.add_argument(output.flag, default=output.default, help=output.help)
    also = " or --resume" if resume else ""
    parser.add_argument(
        "--overwrite", action="store_true", help=f"replace existing results of these outputs (refused without it{also})"
    )
    parser.set_defaults(outputs=outputs)


def check_outputs(args) -> None:
    """The rule of the module docstring, for the outputs the command declared.

    Raises:
        UsageError: the output and the problem, named, with what to do.
    """
    resume, overwrite = getattr(args, "resume", False), getattr(args, "overwrite", False)
    if resume and overwrite:
        raise UsageError("--resume continues the checkpoint and --overwrite replaces it: pick one")
    written: dict[Path, str] = {}
    for output in getattr(args, "outputs", ()):
        value = getattr(args, output.dest)
        if value is None:
            continue
        try:
            (check_folder if output.results else check_writable)(value, output.flag)
            for path in output.files(value):
                if not overwrite and not (resume and output.resumable):
                    allowed = (
                        "add --resume to continue that experiment or --overwrite to replace the file"
                        if (output.resumable)
                        else "add --overwrite to replace it or name another " + output.flag
                    )
                    refuse_overwrite(path, output.flag, allowed)
                remove_stale_temporaries(path)
        except OutputError as error:
            raise UsageError(str(error)) from None
        for path in output.files(value):
            same = written.setdefault(path.resolve(), output.flag)
            if same != output.flag:
                raise UsageError(f"{same} and {output.flag} both name {path}: give each its own file")
