"""One ``torch.autograd.Function`` per op: forward packs what backward needs, backward unpacks it."""

from .activation import (
    CompressedELUFunction,
    CompressedLeakyReLUFunction,
    CompressedPReLUFunction,
    CompressedReLUFunction,
    CompressedSmoothFunction,
)
from .activation_dropout import (
    ActivationDerivativeFunction,
    ActivationDropoutFunction,
    DeferredActivationFunction,
)
from .aggregate import AggregateFunction
from .attention import AttentionSpec, GATAttentionFunction
from .attention_v2 import GATv2AttentionFunction
from .chebyshev import ChebyshevFunction
from .dense_attention import DenseAttentionFunction
from .dropout import DropoutFunction
from .gated import GatedMessageFunction
from .linear import CompressedLinearFunction, EdgePairLinearFunction, SharedInputLinearFunction
from .message_linear import TowerMessageLinearFunction, TowerSpec
from .message_norm import MessageNormFunction
from .norm import CompressedBatchNormFunction, CompressedLayerNormFunction
from .relational import RelationalFunction
from .sage import RowChunkedSAGEFunction
from .saving import SavingFunction, mark_intermediate
from .scale import EpsScaleFunction
from .scatter import ScatterExtremumFunction
from .softmax_aggregation import SoftmaxAggregateFunction
from .transformer import GateFunction, TransformerAttentionFunction
from .variance import VarianceFunction

__all__ = [
    "ActivationDerivativeFunction",
    "ActivationDropoutFunction",
    "DeferredActivationFunction",
    "AggregateFunction",
    "AttentionSpec",
    "ChebyshevFunction",
    "CompressedBatchNormFunction",
    "CompressedELUFunction",
    "CompressedLayerNormFunction",
    "CompressedLeakyReLUFunction",
    "CompressedLinearFunction",
    "EdgePairLinearFunction",
    "CompressedPReLUFunction",
    "CompressedReLUFunction",
    "CompressedSmoothFunction",
    "DenseAttentionFunction",
    "DropoutFunction",
    "EpsScaleFunction",
    "GATAttentionFunction",
    "GATv2AttentionFunction",
    "GateFunction",
    "GatedMessageFunction",
    "RowChunkedSAGEFunction",
    "RelationalFunction",
    "SavingFunction",
    "ScatterExtremumFunction",
    "SoftmaxAggregateFunction",
    "mark_intermediate",
    "SharedInputLinearFunction",
    "MessageNormFunction",
    "TowerMessageLinearFunction",
    "TowerSpec",
    "TransformerAttentionFunction",
    "VarianceFunction",
]
