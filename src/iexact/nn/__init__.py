"""Compressed twins of PyTorch / PyG modules: handlers, their registry and the in-place converter.

Importing this package registers the built-in handlers (one module per
module family or conv).
"""

from . import activation, batch_norm, dropout, gat_conv, gcn2_conv, gcn_conv, gin_conv, linear, sage_conv  # noqa: F401
from .convert import compress_, configure_, is_compressed, restore_, seed_streams
from .handler import HANDLERS, CompressedModule, register_handler

__all__ = [
    "HANDLERS",
    "CompressedModule",
    "compress_",
    "configure_",
    "is_compressed",
    "register_handler",
    "restore_",
    "seed_streams",
]
