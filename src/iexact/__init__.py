"""iexact: train graph neural networks with compressed saved activations."""

from .analysis import GradientError, calibrate_, calibration_state, gradient_error, load_calibration_state_
from .codec import compress, decompress
from .config import PRESETS, CompressionConfig
from .memory import MemoryReport, activation_memory, format_bytes
from .nn import compress_, configure_, register_handler
from .planning import Plan, PlanError, plan_memory
from .quant import PackedActivation

__version__ = "0.2.0"

__all__ = [
    "PRESETS",
    "CompressionConfig",
    "GradientError",
    "MemoryReport",
    "PackedActivation",
    "Plan",
    "PlanError",
    "__version__",
    "activation_memory",
    "calibrate_",
    "calibration_state",
    "compress",
    "compress_",
    "configure_",
    "decompress",
    "format_bytes",
    "gradient_error",
    "load_calibration_state_",
    "plan_memory",
    "register_handler",
]
