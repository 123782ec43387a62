"""iexact: train graph neural networks with compressed saved activations."""
from .config import CompressionConfig
from .nn import compress_
from .quant import PackedActivation, compress, decompress

__version__ = "0.1.0"

__all__ = ["CompressionConfig", "compress_", "PackedActivation", "compress", "decompress", "__version__"]
