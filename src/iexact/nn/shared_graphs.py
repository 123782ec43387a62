r"""One GCN normalization per forward and per backward for a converted model.

:func:`watch_shared_graphs_` hooks the model :func:`~iexact.compress_`
converted so that, while its forward runs, its Functions share the
normalization of each graph they read (:mod:`iexact.autograd.shared_graphs`).
A converted model inside another's forward leaves the sharing to the outer
one; under ``torch.compile`` the hooks return at once.
"""

from __future__ import annotations

import torch

from ..autograd.shared_graphs import close_shared_graphs, open_shared_graphs
from .handler import hook_forward_, keep_token, take_token, unhook_forward_

_TOKEN = "iexact_shared_graphs"  # the instance attribute holding an open forward's token


def _begin(module: torch.nn.Module, args) -> None:
    keep_token(module, _TOKEN, open_shared_graphs())


def _end(module: torch.nn.Module, args, output) -> None:
    token = take_token(module, _TOKEN)
    if token is not None:
        close_shared_graphs(token)


def watch_shared_graphs_(model: torch.nn.Module) -> None:
    """Hook ``model``'s forward to share its graphs' normalizations (once)."""
    hook_forward_(model, _begin, _end)


def unwatch_shared_graphs_(model: torch.nn.Module) -> None:
    """Remove the hooks :func:`watch_shared_graphs_` added."""
    unhook_forward_(model, _begin, _end)
