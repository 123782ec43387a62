import sys

from .experiments.cli import run

sys.exit(run())
