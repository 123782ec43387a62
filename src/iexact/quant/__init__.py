"""The compression core below the dispatch: levels, rounding, projection, the
pure-PyTorch reference quantizer, bit masks and the stored form.

``compress`` / ``decompress`` live one floor up, in :mod:`iexact.codec`,
above the kernel dispatch (:mod:`iexact.kernels`), which imports from here.
"""

from .bitmask import (
    pack_mask,
    pack_nonzero,
    pack_positive,
    pack_selected,
    selected_capacity,
    selected_parts,
    unpack_mask,
    unpack_selected,
    unpacked_parts,
)
from .levels import clipped_normal_sigma, expected_variance, fit_levels, levels_for, optimal_levels, uniform_levels
from .packed import PackedActivation
from .projection import projected_width, rademacher

__all__ = [
    "PackedActivation",
    "clipped_normal_sigma",
    "expected_variance",
    "fit_levels",
    "levels_for",
    "optimal_levels",
    "pack_mask",
    "pack_nonzero",
    "pack_positive",
    "pack_selected",
    "projected_width",
    "rademacher",
    "selected_capacity",
    "selected_parts",
    "uniform_levels",
    "unpack_mask",
    "unpack_selected",
    "unpacked_parts",
]
