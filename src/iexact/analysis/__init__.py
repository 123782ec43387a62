r"""What compression does: the gradients' error against FP32, the data it
rounds, and levels fitted to that data. One module per job:

- :mod:`~iexact.analysis.gradient_error` — :func:`gradient_error`, the
  measurement every choice of projection, bits, levels and block size is
  judged by;
- :mod:`~iexact.analysis.fits` — :func:`analyze_activations`: every tensor one
  training forward compresses, against the distributions the levels assume;
- :mod:`~iexact.analysis.calibration` — :func:`calibrate_` and the state that
  carries calibrated levels beside a ``state_dict``;
- :mod:`~iexact.analysis.observe` — the observed forward the others read.
"""

from .calibration import CALIBRATION_SAMPLE, calibrate_, calibration_state, load_calibration_state_
from .fits import DISTRIBUTIONS, ActivationAnalysis, Fit, analyze_activations, distribution_fits, rounding_variance
from .gradient_error import GradientError, gradient_error
from .observe import cuda_devices, observe_compressions

__all__ = [
    "CALIBRATION_SAMPLE",
    "DISTRIBUTIONS",
    "ActivationAnalysis",
    "Fit",
    "GradientError",
    "analyze_activations",
    "calibrate_",
    "calibration_state",
    "cuda_devices",
    "distribution_fits",
    "gradient_error",
    "load_calibration_state_",
    "observe_compressions",
    "rounding_variance",
]
