r"""Compressed behaviour for existing modules.

Each mixin is combined with a module's own class into a subclass
(:func:`compressed_class`), and :func:`iexact.nn.compress_` switches a module's
``__class__`` to it: parameters, buffers, hooks, ``reset_parameters`` and the
``state_dict`` stay exactly the module's own, and optimizers holding its
parameters keep working. Only ``forward`` changes, and only in training mode
with autograd recording; in ``eval()`` or under ``torch.no_grad()`` the
original ``forward`` runs, so outputs are identical bit for bit.
"""
from __future__ import annotations

import functools

import torch

from ..autograd import (
    CompressedELUFunction,
    CompressedLeakyReLUFunction,
    CompressedLinearFunction,
    CompressedReLUFunction,
    SeededDropoutFunction,
)
from ..config import CompressionConfig
from ..quant.codec import new_seed


class CompressedModule:
    """Marker and shared state of a converted module: its :class:`CompressionConfig`."""

    iexact_config: CompressionConfig
    iexact_base: type  # the module's own class before conversion

    @staticmethod
    def unsupported(module) -> str | None:
        """Why ``module``'s settings cannot be compressed, or ``None``."""
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.parameter.UninitializedParameter):
            return "lazy: run one forward pass before compress_"
        return None

    def _compressing(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def __reduce_ex__(self, protocol):
        # the generated class is not importable by name: rebuild it from its mixin and base
        mixin = type(self).__bases__[0]
        return _new_compressed, (mixin, self.iexact_base), self.__getstate__()

    def extra_repr(self) -> str:
        own = super().extra_repr()
        return f"{own}, iexact={self.iexact_config}" if own else f"iexact={self.iexact_config}"


class LinearMixin(CompressedModule):
    r""":math:`Y = XW^\top + b` keeping :math:`X` compressed (see
    :class:`~iexact.autograd.CompressedLinearFunction`)."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedLinearFunction.apply(x, self.weight, self.bias, self.iexact_config)


class ReLUMixin(CompressedModule):
    """ReLU keeping 1 bit per element."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedReLUFunction.apply(x)


class LeakyReLUMixin(CompressedModule):
    """LeakyReLU keeping 1 bit per element."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedLeakyReLUFunction.apply(x, self.negative_slope)


class ELUMixin(CompressedModule):
    """ELU keeping 1 bit per element plus its compressed negative part."""

    def forward(self, x):
        if not self._compressing():
            return super().forward(x)
        return CompressedELUFunction.apply(x, self.alpha, self.iexact_config)


class DropoutMixin(CompressedModule):
    """Dropout keeping only a seed (drawn from torch's global generator)."""

    def forward(self, x):
        if not self._compressing() or self.p == 0:
            return super().forward(x)
        return SeededDropoutFunction.apply(x, self.p, new_seed())


def _new_compressed(mixin: type, base: type):
    """An empty instance of ``compressed_class(mixin, base)`` for unpickling."""
    cls = compressed_class(mixin, base)
    return cls.__new__(cls)


@functools.lru_cache(maxsize=None)
def compressed_class(mixin: type, base: type) -> type:
    """The subclass of ``base`` with ``mixin``'s forward (one per pair, cached)."""
    return type(f"Compressed{base.__name__}", (mixin, base),
                {"__module__": base.__module__, "iexact_base": base})
