"""``MessageNorm``: the unit messages compressed twice, PyG's values; GENConv with ``msg_norm`` compressed whole."""

import warnings

import pytest
import torch
from torch_geometric.nn import GENConv
from torch_geometric.nn.norm import MessageNorm

import iexact
from iexact import CompressionConfig

from .examples import Example
from .forms import F_IN, N, compare, edges, features


class WithMessages(torch.nn.Module):
    """``norm(x, msg)`` with messages made from ``x`` (another row's features,
    doubled), so that the shared checks can call it as ``(x)``."""

    def __init__(self, norm: MessageNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x, x.roll(1, dims=0) * 2)


EXAMPLES = [
    Example("MessageNorm", lambda channels: WithMessages(MessageNorm()), inputs="x"),
    Example("MessageNorm learned scale", lambda channels: WithMessages(MessageNorm(learn_scale=True)), inputs="x"),
]


def test_another_p_takes_pygs_forward():
    compare(
        lambda: MessageNorm(True), lambda norm, x, m: norm(x, m, p=1.0), [features(N, F_IN), features(N, 4, seed=2)]
    )


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16 autocast"])
def test_genconv_with_msg_norm_is_compressed_whole_and_pygs_values_bit_for_bit(autocast):
    conv = GENConv(F_IN, 8, aggr="mean", msg_norm=True, learn_msg_scale=True, norm="layer")  # (BatchNorm: close)
    twin = GENConv(F_IN, 8, aggr="mean", msg_norm=True, learn_msg_scale=True, norm="layer")
    twin.load_state_dict(conv.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to the fallback
        iexact.compress_(conv, CompressionConfig())
    x, edge_index = features(N, F_IN), edges()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.manual_seed(0)
        ours = conv(x, edge_index)
        torch.manual_seed(0)
        assert torch.equal(ours, twin(x, edge_index))
