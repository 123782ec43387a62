"""``BatchNorm1d`` (and PyG's ``BatchNorm``): the normalized input compressed."""

import copy

import pytest
import torch
from torch_geometric.nn import BatchNorm

import iexact
from iexact import CompressionConfig
from iexact.codec import stored_bytes

from .examples import Example

EXAMPLES = [
    Example("BatchNorm1d", lambda channels: torch.nn.BatchNorm1d(channels), "x"),
    Example("PyG BatchNorm", lambda channels: BatchNorm(channels), "x"),
]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_are_torchs_own(momentum):
    """The running mean and variance come out of torch's batch-norm kernel, as the
    stock module's do: bit for bit in float32 (momentum or cumulative average)."""
    torch.manual_seed(0)
    stock = torch.nn.BatchNorm1d(16, momentum=momentum)
    converted = iexact.compress_(torch.nn.Sequential(copy.deepcopy(stock)), CompressionConfig())[0]
    for _ in range(3):
        x = torch.randn(200, 16) * 3 + 1
        stock(x)
        converted(x)
    assert torch.equal(converted.running_mean, stock.running_mean)
    assert torch.equal(converted.running_var, stock.running_var)
    assert converted.num_batches_tracked == stock.num_batches_tracked == 3


def test_running_statistics_in_another_dtype_follow_torchs_update():
    """Buffers in float64 (the batch normalized in float32): torch's update, rounded into them."""
    torch.manual_seed(0)
    stock = torch.nn.BatchNorm1d(16).double()
    converted = iexact.compress_(torch.nn.Sequential(copy.deepcopy(stock)), CompressionConfig())[0]
    for _ in range(3):
        x = torch.randn(200, 16, dtype=torch.float64) * 3 + 1
        stock(x)
        converted(x)
    torch.testing.assert_close(converted.running_mean, stock.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(converted.running_var, stock.running_var, rtol=1e-6, atol=1e-7)


def test_the_normalized_input_is_stored_uncentered():
    """Its columns have mean 0: no center is kept (4C bytes fewer than a centered tensor)."""
    config = CompressionConfig()
    module = iexact.compress_(torch.nn.Sequential(torch.nn.BatchNorm1d(16)), config)
    x = torch.randn(200, 16, requires_grad=True)
    stored = iexact.activation_memory(module, x)
    invstd = 4 * 16
    assert stored.total == stored_bytes((200, 16), config.batch_norm_inputs) + invstd
    assert stored_bytes((200, 16), config) == stored_bytes((200, 16), config.batch_norm_inputs) + 4 * 16
