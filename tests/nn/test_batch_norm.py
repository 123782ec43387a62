"""``BatchNorm1d`` (and PyG's ``BatchNorm``): the normalized input compressed."""

import torch
from torch_geometric.nn import BatchNorm

from .examples import Example

EXAMPLES = [
    Example("BatchNorm1d", lambda channels: torch.nn.BatchNorm1d(channels), "x"),
    Example("PyG BatchNorm", lambda channels: BatchNorm(channels), "x"),
]
