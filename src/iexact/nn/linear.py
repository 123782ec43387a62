r"""``torch.nn.Linear`` and PyG's ``Linear`` keeping their input compressed."""

from __future__ import annotations

import torch
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..autograd import CompressedLinearFunction, SharedInputLinearFunction
from ..autograd.precision import plus_linear_bias
from .handler import CompressedModule, register_handler


def shared_input_linears(handler: CompressedModule, x: torch.Tensor, *modules: torch.nn.Module | None) -> list:
    r""":math:`x W_j^\top + b_j` for each of ``modules`` a conv keeping tensors
    per edge (attention, gates) computes itself (``None`` for ``None``), from one compressed copy of
    ``x`` for all of them (:class:`~iexact.autograd.SharedInputLinearFunction`),
    with ``handler``'s seeds and its config's
    :attr:`~iexact.CompressionConfig.edge_conv_inputs` (unprojected unless
    ``rp_edge_convs``: the conv's per-edge tensors are most of what it keeps)."""
    present = [module for module in modules if module is not None]
    config, seeds = handler.iexact_config.edge_conv_inputs, handler.iexact_seeds
    if len(present) == 1:
        (module,) = present
        outputs = iter([CompressedLinearFunction.apply(x, module.weight, module.bias, config, seeds)])
    else:
        products = SharedInputLinearFunction.apply(x, config, seeds, *(module.weight for module in present))
        biases: list[torch.Tensor | None] = [module.bias for module in present]  # type: ignore[misc]
        outputs = iter(plus_linear_bias(y, bias) for y, bias in zip(products, biases, strict=True))
    return [None if module is None else next(outputs) for module in modules]


@register_handler(torch.nn.Linear)
class LinearHandler(CompressedModule):
    r""":math:`Y = XW^\top + b` keeping :math:`X` compressed (see
    :class:`~iexact.autograd.CompressedLinearFunction`).

    Stores: :math:`X` compressed, :math:`\lceil N k b / 8 \rceil` bytes plus scales.
    """

    def forward(self, input):
        if not self._compressing():
            return super().forward(input)
        return CompressedLinearFunction.apply(input, self.weight, self.bias, self.iexact_config, self.iexact_seeds)


@register_handler(PyGLinear)
class PyGLinearHandler(CompressedModule):
    """PyG's ``Linear``, as :class:`LinearHandler` (its argument is named ``x``)."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedLinearFunction.apply(x, self.weight, self.bias, self.iexact_config, self.iexact_seeds)
