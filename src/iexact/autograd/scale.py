r"""Scaling by :math:`1 + \epsilon` with a learnable :math:`\epsilon` (GIN's root term)."""

from __future__ import annotations

from ..config import CompressionConfig
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack


class EpsScaleFunction(SavingFunction):
    r""":math:`Y = (1 + \epsilon) X`; backward :math:`dX = (1 + \epsilon)\, dY`,
    :math:`d\epsilon = \sum dY \odot \hat X`.

    Stores: a reference to :math:`\epsilon` (the module's own tensor) and,
    only when :math:`\epsilon` needs a gradient, :math:`X` compressed.

    Shapes:
        - **input:** :math:`X` :math:`(*, D)`, :math:`\epsilon` :math:`(1,)`
        - **output:** :math:`(*, D)`
    """

    @staticmethod
    def forward(ctx, x, eps, config: CompressionConfig, seeds: SeedStream | None):
        save(ctx, eps, pack(x, config, seeds, argument=True) if eps.requires_grad else None)
        return x * (1 + eps)

    @staticmethod
    def backward(ctx, grad_out):
        eps, packed = load(ctx)
        grad_eps = None
        if packed is not None and ctx.needs_input_grad[1]:
            grad_eps = (grad_out.float() * unpack(packed).float()).sum().reshape(eps.shape).to(eps.dtype)
        return grad_out * (1 + eps), grad_eps, None, None
