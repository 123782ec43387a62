"""``ReLU`` and ``LeakyReLU`` (sign bits), ``ELU`` (sign bits and its negative part)."""

import torch
from torch_geometric.nn import MLP

from .examples import Example

EXAMPLES = [
    Example("ReLU", lambda channels: torch.nn.ReLU(), "x", unbiased=False),  # signs: the gradient is exact
    Example("LeakyReLU", lambda channels: torch.nn.LeakyReLU(0.1), "x", unbiased=False),
    Example("ELU", lambda channels: torch.nn.ELU(0.7), "x"),
    Example("MLP with ELU", lambda channels: MLP([channels, 16, 16, 7], norm=None, act="elu"), "x"),
]
