"""One ``torch.autograd.Function`` per op: forward packs what backward needs, backward unpacks it."""
from .activation import CompressedLeakyReLUFunction, CompressedReLUFunction
from .dropout import SeededDropoutFunction
from .linear import CompressedLinearFunction

__all__ = [
    "CompressedLinearFunction",
    "CompressedReLUFunction",
    "CompressedLeakyReLUFunction",
    "SeededDropoutFunction",
]
