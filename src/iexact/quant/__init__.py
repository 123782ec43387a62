"""Compression core: projection, block-wise quantization, packing."""
from .codec import compress, decompress
from .levels import expected_variance, optimal_levels, uniform_levels
from .packed import PackedActivation

__all__ = [
    "compress",
    "decompress",
    "PackedActivation",
    "optimal_levels",
    "uniform_levels",
    "expected_variance",
]
