r"""Dropout keeping a generator snapshot instead of its mask."""

from __future__ import annotations

import torch

from ..autograd import DropoutFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.Dropout)
class DropoutHandler(CompressedModule):
    """Dropout whose mask is torch's own (the same draw from the default
    generator) and is redrawn in backward (see :class:`~iexact.autograd.DropoutFunction`).

    Stores: the generator snapshot, no per-element state.
    """

    def forward(self, input):
        if not self._compressing() or self.p == 0:
            return super().forward(input)
        return DropoutFunction.apply(input, self.p)
