"""iexact: train graph neural networks with compressed saved activations."""
from .config import CompressionConfig
from .memory import MemoryReport, activation_memory
from .nn import compress_
from .quant import PackedActivation, compress, decompress

__version__ = "0.1.0"

__all__ = [
    "CompressionConfig",
    "MemoryReport",
    "PackedActivation",
    "__version__",
    "activation_memory",
    "compress",
    "compress_",
    "decompress",
]
