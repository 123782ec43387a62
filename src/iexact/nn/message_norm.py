r"""PyG's ``MessageNorm`` (GENConv's ``msg_norm``) keeping the unit messages compressed twice."""

from __future__ import annotations

from torch_geometric.nn.norm import MessageNorm

from ..autograd import MessageNormFunction
from .handler import CompressedModule, register_handler


@register_handler(MessageNorm)
class MessageNormHandler(CompressedModule):
    r""":math:`s \lVert X_i \rVert\, M_i / \lVert M_i \rVert` through
    :class:`~iexact.autograd.MessageNormFunction`: PyG's own output, an
    unbiased gradient. A call with :math:`p \ne 2` takes PyG's forward.

    Stores: the unit messages compressed twice, the unit features once (never
    projected), 8 bytes of norms per row.
    """

    def forward(self, x, msg, p: float = 2.0):
        if not self._compressing() or p != 2.0:
            return super().forward(x, msg, p)
        return MessageNormFunction.apply(x, msg, self.scale, self.iexact_config, self.iexact_seeds)
