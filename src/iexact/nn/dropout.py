r"""Dropout keeping its mask as bits or as a generator snapshot (``CompressionConfig.dropout_masks``)."""

from __future__ import annotations

import torch

from ..autograd import ActivationDerivativeFunction, ActivationDropoutFunction, DropoutFunction, mark_intermediate
from ..autograd.activation_dropout import claim
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.Dropout)
class DropoutHandler(CompressedModule):
    """Dropout whose mask is torch's own (the same draw from the default
    generator), kept as bits or redrawn in backward from a generator snapshot
    as ``dropout_masks`` says (see :class:`~iexact.autograd.DropoutFunction`).

    Stores: one bit per element, or the generator snapshot; after an
    activation that left it its derivative
    (:class:`~iexact.nn.activation.SignHandler`), one bit per element after
    a ReLU ("kept and positive"), or the signs of the elements it keeps (see
    :class:`~iexact.autograd.ActivationDropoutFunction`).
    """

    def forward(self, input):
        slope = None if torch.compiler.is_compiling() or not torch.is_grad_enabled() else claim(input)
        bits = self.iexact_config.keeps_dropout_bits(input.device)
        if slope is not None:
            if self._compressing() and 0 < self.p < 1:
                return mark_intermediate(ActivationDropoutFunction.apply(input, self.p, slope, bits))
            input = ActivationDerivativeFunction.apply(input, slope)
        if not self._compressing() or self.p == 0:
            return super().forward(input)
        # of an input that needs no gradient (data.x) the output has no grad_fn: not the caller's all the same
        return mark_intermediate(DropoutFunction.apply(input, self.p, bits))
