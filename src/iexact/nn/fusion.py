r"""Where a model's structure lets an activation leave its derivative to the dropout after it.

PyG's :class:`~torch_geometric.nn.models.basic_gnn.BasicGNN` (``GCN``,
``GraphSAGE``, ``GIN``, ``GAT``, ``PNA``, ``EdgeCNN``) runs, after every
layer but the last, ``x = self.act(x)`` then ``x = self.dropout(x)`` (with
``act_first=False``): the activation's output goes to the dropout and
nowhere else. There ReLU and LeakyReLU keep no signs of their own, and
dropout keeps those of the elements it keeps, :math:`(1 - p)` bits per
element instead of one (:mod:`iexact.autograd.activation_dropout`); the
gradients are the same bit for bit.

Only a forward that is PyG's own qualifies (a subclass overriding it may
use the activation's output elsewhere), with both modules converted, the
activation used by no other module of the model (GIN's MLPs share it) and
no hook on the dropout when :func:`~iexact.compress_` runs. A hook on the
activation turns the saving off while it is there; a pre-hook added to the
dropout later that replaces its input is refused in backward.
"""

from __future__ import annotations

import torch
from torch_geometric.nn.models.basic_gnn import BasicGNN

from .activation import SignHandler
from .dropout import DropoutHandler
from .handler import has_forward_hooks


def link_activations_(model: torch.nn.Module) -> None:
    """Mark each activation of ``model`` whose output only a dropout takes
    (``iexact_before_dropout``), clearing the marks of the others."""
    uses: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        uses[id(module)] = uses.get(id(module), 0) + 1
    for module in model.modules():
        if isinstance(module, SignHandler):
            module.iexact_before_dropout = False
    for module in model.modules():
        act = getattr(module, "act", None)
        if isinstance(act, SignHandler) and _act_feeds_dropout(module) and uses[id(act)] == 1:
            act.iexact_before_dropout = True


def unlink_activations_(model: torch.nn.Module) -> None:
    """Remove the marks :func:`link_activations_` set."""
    for module in model.modules():
        if isinstance(module, SignHandler) and "iexact_before_dropout" in vars(module):
            del module.iexact_before_dropout


def _act_feeds_dropout(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a BasicGNN running PyG's own forward that passes
    its converted ReLU or LeakyReLU straight to its converted dropout, with no
    hook on the dropout that could replace its input."""
    return (
        isinstance(module, BasicGNN)
        and type(module).forward is BasicGNN.forward
        and not module.act_first
        and isinstance(module.act, SignHandler)
        and isinstance(module.dropout, DropoutHandler)
        and not has_forward_hooks(module.dropout)
    )
