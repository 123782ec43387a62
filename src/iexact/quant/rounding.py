r"""Rounding and size helpers shared by the PyTorch reference and the Triton kernels.

A block :math:`i` of :math:`G` consecutive elements keeps :math:`m_i` and
:math:`s_i \ge M_i - m_i` in the scale dtype, rounded outward (:math:`m_i`
down, :math:`s_i` up) so that every element maps into :math:`[0, B]` on
the axis :math:`u = (z - m_i) B / s_i`, :math:`B = 2^b - 1`. The position of
:math:`u` between level indices, :math:`j + (u - \ell_j)/(\ell_{j+1} -
\ell_j)`, is a per-block affine map followed by hinges
(:func:`rounding_map`); adding a uniform offset and truncating gives the
unbiased stochastic rounding.
"""

from __future__ import annotations

import functools
import math
from itertools import pairwise
from typing import NamedTuple

import torch


def codes_per_byte(bits: int) -> int:
    return 8 // bits


def packed_size(numel: int, bits: int) -> int:
    r""":math:`\lceil n b / 8 \rceil`: bytes of the packed codes."""
    return math.ceil(numel * bits / 8)


def num_blocks(numel: int, block_size: int) -> int:
    return math.ceil(numel / block_size)


def stored_scales(
    mins: torch.Tensor, maxs: torch.Tensor, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-block min and step rounded outward into ``scale_dtype``.

    :math:`m` is the largest representable value :math:`\le` the block min and
    :math:`s` the smallest representable value :math:`\ge M - m`, so quantizing
    with the stored values keeps every :math:`u` inside :math:`[0, B]` and the
    estimate unbiased. A constant block whose value the scale dtype holds
    exactly gets :math:`s = 0` and decodes exactly.
    """
    low = mins.to(scale_dtype)
    low = torch.where(low.float() > mins, torch.nextafter(low, torch.full_like(low, -math.inf)), low)
    spread = maxs - low.float()
    step = spread.to(scale_dtype)
    step = torch.where(step.float() < spread, torch.nextafter(step, torch.full_like(step, math.inf)), step)
    return low, step


@functools.lru_cache(maxsize=64)
def level_table(levels: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(table, slopes)`` on ``device``: the levels :math:`\ell_j` as float32
    :math:`(2^b,)` and :math:`1 / (\ell_{j+1} - \ell_j)` :math:`(2^b - 1,)`.

    Made once per levels and device and shared (never written): on CUDA,
    building it from the Python floats is a copy from the host, which a
    training step must not wait for."""
    table = torch.tensor(levels, dtype=torch.float32, device=device)
    return table, (table[1:] - table[:-1]).reciprocal_()


def _is_uniform(levels: tuple[float, ...]) -> bool:
    return levels == tuple(float(i) for i in range(len(levels)))


def _hinges(levels: tuple[float, ...], shift: float) -> tuple[float, list[tuple[float, float, float]]]:
    r"""The map :math:`u \mapsto` position between level indices,
    :math:`j + (u - \ell_j)/(\ell_{j+1} - \ell_j)`, as a sum of hinges.

    With slopes :math:`s_j = 1/(\ell_{j+1} - \ell_j)` the map is
    :math:`s_0 u + \sum_{j \ge 1} (s_j - s_{j-1}) \max(u - \ell_j, 0)`.
    In the variable :math:`v = s_0 u + \text{shift}` it reads
    :math:`v - \text{shift} + \sum_j g_j \,\mathrm{clamp}(v - c_j, 0, w_j)`,
    and two consecutive hinges of opposite gain (symmetric levels) merge into
    one clamp of finite width.

    Returns:
        :math:`s_0` and a list of ``(c_j, w_j, g_j)``.
    """
    slopes = [1.0 / (hi - lo) for lo, hi in pairwise(levels)]
    s0 = slopes[0]
    raw = [(shift + s0 * levels[j], (slopes[j] - slopes[j - 1]) / s0) for j in range(1, len(levels) - 1)]
    hinges = []
    while raw:
        start, gain = raw.pop(0)
        if raw and abs(raw[0][1] + gain) <= 1e-9 * abs(gain):
            hinges.append((start, raw.pop(0)[0] - start, gain))
        else:
            hinges.append((start, math.inf, gain))
    return s0, hinges


class RoundingMap(NamedTuple):
    r"""Per-block affine map to :math:`v = s_0 u + \text{shift}` and the hinges
    that turn :math:`v` into the position between level indices (plus shift).

    ``search`` is set for many non-uniform levels, or asymmetric ones: then :math:`v = u` and the
    position comes from a binary search over the levels instead of hinges.
    """

    gain: torch.Tensor
    bias: torch.Tensor
    hinges: list
    search: bool


class RoundingPlan(NamedTuple):
    r"""What :func:`rounding_map` needs of the levels alone, before any block
    is seen: the slope :math:`s_0`, the hinges ``(c_j, w_j, g_j)`` and whether
    the position comes from a binary search instead."""

    s0: float
    hinges: list
    search: bool


def rounding_plan(levels: tuple[float, ...], shift: float) -> RoundingPlan:
    """The :class:`RoundingPlan` of ``levels`` with the noise ``shift``."""
    uniform = _is_uniform(levels)
    search = len(levels) > 4 and not uniform
    s0, hinges = (1.0, []) if uniform or search else _hinges(levels, shift)
    if len(hinges) > 1:  # asymmetric levels (calibrated): no merged hinge, search instead
        return RoundingPlan(1.0, [], True)
    return RoundingPlan(s0, hinges, search)


def rounding_map(mins, steps, bits: int, levels: tuple[float, ...], shift: float) -> RoundingMap:
    """The :class:`RoundingMap` of blocks with stored ``mins`` and ``steps``."""
    top = 2**bits - 1
    s0, hinges, search = rounding_plan(levels, shift)
    # u = (z - m) B / s lies in [0, B(1 + 2 eps)]: m rounds down and s up
    gain = torch.where(steps > 0, (top * s0) / steps.float(), torch.zeros((), device=steps.device))
    bias = (0.0 if search else shift) - mins.float() * gain
    return RoundingMap(gain, bias, hinges, search)
