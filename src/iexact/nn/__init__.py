"""Compressed twins of PyTorch / PyG modules and the in-place converter."""
from .convert import compress_, is_compressed

__all__ = ["compress_", "is_compressed"]
