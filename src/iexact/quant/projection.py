r"""Seeded Rademacher random projection of the feature axis.

.. math::
    Z = H P, \qquad P_{ij} = \pm 1/\sqrt{k} \text{ i.i.d.}, \qquad
    \mathbb{E}[P P^\top] = I_D,

so :math:`\hat H = Z P^\top` is an unbiased estimate of :math:`H`. Only the
seed is stored; :func:`rademacher` regenerates :math:`P` bit for bit on the
same device, together with a contiguous :math:`P^\top` for the inverse.
"""
from __future__ import annotations

import math

import torch


def projected_width(width: int, rp_ratio: float) -> int | None:
    r""":math:`k = \lceil D / R \rceil`, or ``None`` where projecting would not
    make the row narrower (``rp_ratio == 1`` or :math:`k \ge D`): then the
    identity is both cheaper and exact."""
    k = max(1, math.ceil(width / rp_ratio))
    return k if k < width else None


def rademacher(width: int, k: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The projection :math:`P \in \{\pm 1/\sqrt{k}\}^{D \times k}` drawn from
    ``seed`` on ``device``, and its transpose as a contiguous tensor.

    Shapes:
        - **output:** :math:`(D, k)` and :math:`(k, D)`, float32.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    signs = torch.randint(0, 2, (width, k), generator=generator, device=device)
    scale = 1.0 / math.sqrt(k)
    projection = signs.to(torch.float32).mul_(2.0 * scale).sub_(scale)
    return projection, projection.t().contiguous()
