"""One ``torch.autograd.Function`` per op: forward packs what backward needs, backward unpacks it."""

from .activation import CompressedELUFunction, CompressedLeakyReLUFunction, CompressedReLUFunction
from .aggregate import AggregateFunction
from .attention import AttentionSpec, GATAttentionFunction
from .dropout import DropoutFunction
from .linear import CompressedLinearFunction, SharedInputLinearFunction
from .norm import CompressedBatchNormFunction
from .sage import RowChunkedSAGEFunction
from .saving import SavingFunction
from .scale import EpsScaleFunction

__all__ = [
    "AggregateFunction",
    "AttentionSpec",
    "CompressedBatchNormFunction",
    "CompressedELUFunction",
    "CompressedLeakyReLUFunction",
    "CompressedLinearFunction",
    "CompressedReLUFunction",
    "DropoutFunction",
    "EpsScaleFunction",
    "GATAttentionFunction",
    "RowChunkedSAGEFunction",
    "SavingFunction",
    "SharedInputLinearFunction",
]
