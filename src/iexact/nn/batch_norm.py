r"""Batch normalization keeping its normalized input compressed."""

from __future__ import annotations

import torch

from ..autograd import CompressedBatchNormFunction
from .handler import CompressedModule, register_handler


@register_handler(torch.nn.BatchNorm1d)
class BatchNormHandler(CompressedModule):
    r"""``BatchNorm1d`` on :math:`(N, C)` inputs through
    :class:`~iexact.autograd.CompressedBatchNormFunction`, with the running
    statistics updated as ``torch.nn.BatchNorm1d`` updates them (by its kernel). PyG's
    ``BatchNorm`` wraps a ``BatchNorm1d`` and is compressed through it.
    :math:`(N, C, L)` inputs and single-row batches take the module's own path.

    Stores: the normalized input compressed (projected only with
    ``rp_norm``, never centered) and :math:`4C` bytes of :math:`1/\sigma`.
    """

    def forward(self, input):
        if not self._compressing() or input.dim() != 2 or input.shape[0] < 2:
            return super().forward(input)
        factor = 0.0 if self.momentum is None else self.momentum
        tracking = self.track_running_stats and self.running_mean is not None
        if tracking and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        running = (self.running_mean, self.running_var) if tracking else (None, None)
        out = CompressedBatchNormFunction.apply(
            input, self.weight, self.bias, running, factor, self.eps, self.iexact_config, self.iexact_seeds
        )
        return out
