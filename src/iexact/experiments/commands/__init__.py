"""The ``iexact`` subcommands, one module each; :data:`COMMANDS` in the order ``--help`` lists them.

Each module's ``register(subparsers)`` declares its parser from the shared
argument groups (:mod:`~iexact.experiments.commands.arguments`,
:mod:`~iexact.experiments.commands.outputs`) and sets its ``run(args)``
(and optionally ``interrupted(args, argv)``, what a Ctrl-C leaves) as defaults.
"""

from . import analyze, bench, datasets, plan, train

COMMANDS = (datasets, train, analyze, plan, bench)
