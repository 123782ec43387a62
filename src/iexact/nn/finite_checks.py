r"""The finite check of a converted model, read once per forward.

``CompressionConfig(check_finite=True)`` refuses a tensor holding NaN or Inf.
Read per compression, that is one host sync per compressed tensor, each
stalling a GPU's queue. :func:`watch_finite_checks_` hooks the model
:func:`~iexact.compress_` converted instead: its forward collects every
compression's check on the device (:data:`iexact.ops.codec.FINITE_CHECKS`)
and reads them all once at its end, raising the error of the first tensor
that failed. A converted module called on its own, outside the model's
forward, checks each compression as before; a compiled graph checks inside
the operator (Dynamo cannot trace a ContextVar), and a forward that raised
drops its checks.
"""

from __future__ import annotations

import torch

from ..ops.codec import finish_finite_checks, start_finite_checks
from .handler import hook_forward_, keep_token, take_token, unhook_forward_

_TOKEN = "iexact_finite_checks"  # the instance attribute holding an open collection's token


def _begin(module: torch.nn.Module, args) -> None:
    # no token under torch.compile, or where an outer forward (another converted model's) collects already
    keep_token(module, _TOKEN, start_finite_checks())


def _end(module: torch.nn.Module, args, output) -> None:
    token = take_token(module, _TOKEN)
    if token is not None:
        finish_finite_checks(token, raising=output is not None)  # None: the forward raised (always_call)


def watch_finite_checks_(model: torch.nn.Module) -> None:
    """Hook ``model``'s forward to collect and read its finite checks (once)."""
    hook_forward_(model, _begin, _end)


def unwatch_finite_checks_(model: torch.nn.Module) -> None:
    """Remove the hooks :func:`watch_finite_checks_` added."""
    unhook_forward_(model, _begin, _end)
