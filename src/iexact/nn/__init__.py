"""Compressed twins of PyTorch / PyG modules: handlers, their registry and the in-place converter.

Every module of this package is imported here, so a handler registers itself
(:func:`register_handler`) by being a file in it: adding a conv is one file
(``nn/<conv>.py``) and its test (``tests/nn/test_<conv>.py``).
"""

import importlib
import pkgutil

from .convert import compress_, configure_, is_compressed, module_configs, restore_, seed_streams
from .handler import HANDLERS, CompressedModule, original_class, register_handler

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "HANDLERS",
    "CompressedModule",
    "compress_",
    "configure_",
    "is_compressed",
    "module_configs",
    "original_class",
    "register_handler",
    "restore_",
    "seed_streams",
]
