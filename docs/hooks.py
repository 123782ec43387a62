"""MkDocs hooks: the pages' generated parts, read from the code at build time.

A page holds a marker ``<!-- iexact:NAME -->`` and :func:`on_page_markdown`
replaces it with what :data:`GENERATORS` makes of the installed package:

- ``handlers``: every module class :func:`iexact.compress_` converts, from the
  handler registry, with what its handler stores (the ``Stores:`` paragraph of
  its docstring), so adding a handler adds its row;
- ``presets``: :data:`iexact.PRESETS`, spelled out by ``str(config)``;
- ``cli``: ``iexact --help`` and every subcommand's, as argparse prints them.
"""

from __future__ import annotations

import argparse
import re
import warnings

MARKER = re.compile(r"<!-- iexact:([a-z-]+) -->")


def rst_to_markdown(text: str) -> str:
    """The reStructuredText roles of a docstring as Markdown (``:math:`` as arithmatex, literals as code)."""
    text = re.sub(r":math:`([^`]*)`", r"\\(\1\\)", text)
    text = re.sub(r":(?:class|func|meth|attr|data|mod|obj):`~?([^`]*)`", r"`\1`", text)
    return re.sub(r"``([^`]*)``", r"`\1`", text)


def stores(handler: type) -> str:
    """The ``Stores:`` paragraph of a handler's docstring, on one line."""
    doc = handler.__doc__ or ""
    found = re.search(r"Stores:\s*(.*?)(?:\n\s*\n|$)", doc, flags=re.S)
    return " ".join(found.group(1).split()) if found else ""


def handlers_table() -> str:
    from iexact.nn import HANDLERS

    rows = ["| module | handler | keeps for backward |", "|---|---|---|"]
    for module, handler in sorted(HANDLERS.items(), key=lambda item: (item[0].__module__, item[0].__name__)):
        package, kept = module.__module__.split(".")[0], rst_to_markdown(stores(handler))
        rows.append(f"| `{package}`'s `{module.__name__}` | `{handler.__module__}` | {kept} |")
    return "\n".join(rows)


def presets_table() -> str:
    from iexact import PRESETS

    rows = ["| preset | what it stores |", "|---|---|"]
    rows += [f"| `{name}` | {config} |" for name, config in PRESETS.items()]
    return "\n".join(rows)


def _help(parser: argparse.ArgumentParser) -> str:
    """``--help`` as a 100-column terminal shows it (argparse otherwise wraps to this one's)."""
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
    return parser.format_help().rstrip()


def _subparsers(parser: argparse.ArgumentParser):
    """``(name, parser)`` of every subcommand below ``parser``, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def cli_reference() -> str:
    from iexact.experiments.cli import build_parser

    parser = build_parser()
    sections = ["```text\n" + _help(parser) + "\n```"]
    for name, sub in _subparsers(parser):
        sections.append(f"### `iexact {name}`\n\n```text\n{_help(sub)}\n```")
    return "\n\n".join(sections)


def memory_report() -> str:
    """``print(iexact.activation_memory(...))`` of the guide's example model."""
    import torch
    from torch_geometric.nn.models import GraphSAGE

    import iexact

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 128, generator=generator)
    edge_index = torch.randint(0, 20_000, (2, 200_000), generator=generator)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GraphSAGE(128, 128, num_layers=3, out_channels=40, norm="batch", dropout=0.5)
    iexact.compress_(model, iexact.CompressionConfig())
    return "```text\n" + str(iexact.activation_memory(model, x, edge_index)) + "\n```"


GENERATORS = {
    "handlers": handlers_table,
    "presets": presets_table,
    "cli": cli_reference,
    "memory-report": memory_report,
}


def on_startup(command, dirty) -> None:
    """Import what the generators read once, with the deprecation warnings of
    the libraries' own imports (PyG scripts a class with ``torch.jit``) kept out
    of the build's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import iexact.experiments.cli  # noqa: F401


def on_page_markdown(markdown: str, page, config, files) -> str:
    def generate(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"{page.file.src_path}: unknown generated part {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(generate, markdown)
