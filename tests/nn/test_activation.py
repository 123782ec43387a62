"""``ReLU`` and ``LeakyReLU`` (sign bits), ``ELU`` and ``PReLU`` (sign bits and the
negative part), smooth activations (their derivative)."""

import torch
from torch_geometric.nn import MLP

from .examples import Example

EXAMPLES = [
    Example("ReLU", lambda channels: torch.nn.ReLU(), "x", unbiased=False),  # signs: the gradient is exact
    Example("LeakyReLU", lambda channels: torch.nn.LeakyReLU(0.1), "x", unbiased=False),
    Example("ELU", lambda channels: torch.nn.ELU(0.7), "x"),
    Example("GELU", lambda channels: torch.nn.GELU(), "x"),
    Example("GELU tanh", lambda channels: torch.nn.GELU(approximate="tanh"), "x"),
    Example("SiLU", lambda channels: torch.nn.SiLU(), "x"),
    Example("Mish", lambda channels: torch.nn.Mish(), "x"),
    Example("Tanh", lambda channels: torch.nn.Tanh(), "x"),
    Example("Sigmoid", lambda channels: torch.nn.Sigmoid(), "x"),
    Example("Softplus", lambda channels: torch.nn.Softplus(2.0, 5.0), "x"),
    Example("PReLU per channel", lambda channels: torch.nn.PReLU(channels), "x"),
    Example("PReLU", lambda channels: torch.nn.PReLU(), "x"),
    Example("MLP with ELU", lambda channels: MLP([channels, 16, 16, 7], norm=None, act="elu"), "x"),
]
