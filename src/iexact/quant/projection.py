r"""Seeded random projections of the feature axis, regenerated from a seed.

Every kind maps a row :math:`h \in \mathbb{R}^D` to :math:`z \in \mathbb{R}^k`,
:math:`k = \lceil D / R \rceil`, with an inverse :math:`\hat h = g(z)` that is
unbiased, :math:`\mathbb{E}[g(f(h))] = h`. Only the seed is stored.

- ``"shared"`` (EXACT, i-Exact): :math:`z = h P`, :math:`\hat h = z P^\top`,
  :math:`P \in \{\pm 1/\sqrt{k}\}^{D \times k}` i.i.d., one :math:`P` for
  every row. Per element :math:`\mathrm{Var}(\hat h_d) = (\lVert h \rVert^2 -
  h_d^2)/k`, but the error is the same matrix for all rows, so a sum over rows
  (a weight gradient :math:`dY^\top \hat H = dY^\top H P P^\top`) does not average it.
- ``"per_row"``: :math:`z = (h \odot s_n) P`, :math:`\hat h = (z P^\top) \odot s_n`
  with random signs :math:`s_n` per row (:func:`iexact.seeds.row_signs`):
  unbiased because :math:`\mathrm{diag}(P P^\top) = 1`, same per-element
  variance, errors independent from row to row.
- ``"sketch"`` (count sketch): column :math:`d` goes to bucket
  :math:`j(d) = d \bmod k` (the columns dealt round-robin, buckets of
  :math:`\lfloor D/k \rfloor` or :math:`\lceil D/k \rceil`);
  :math:`z_j = \sum_{d \in B_j} s_{n,d} h_d`, :math:`\hat h_d = s_{n,d}
  z_{j(d)}`. Unbiased (the signs are drawn per tensor),
  :math:`\mathrm{Var}(\hat h_d) = \sum_{d' \in B_{j(d)}, d' \ne d}
  h_{d'}^2`, less than the dense kinds', errors independent from row to row,
  and :math:`O(D)` work per row instead of :math:`O(D k)`. Why a fixed
  partition: summed over a row the variance is :math:`\sum_j (|B_j| - 1)
  \sum_{d \in B_j} h_d^2`, :math:`(D/k - 1) \lVert h \rVert^2` for buckets
  of equal size whichever columns share one, so the error of a weight
  gradient :math:`dY^\top \hat H` (its Frobenius norm) does not depend on
  the partition; only the signs must be fresh. Bucket :math:`j`'s columns
  are then the slices :math:`j, j + k, \dots`: contiguous on CPU, computed
  (not read from a table) in the fused kernels.
"""

from __future__ import annotations

import math

import torch

from ..config import ALLOWED_PROJECTIONS
from ..seeds import matrix_seed, row_signs


def projected_width(width: int, rp_ratio: float) -> int | None:
    r""":math:`k = \lceil D / R \rceil`, or ``None`` where projecting would not
    make the row narrower (``rp_ratio == 1`` or :math:`k \ge D`): then the
    identity is both cheaper and exact."""
    k = max(1, math.ceil(width / rp_ratio))
    return k if k < width else None


def rademacher(width: int, k: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The projection :math:`P \in \{\pm 1/\sqrt{k}\}^{D \times k}` of
    ``seed`` on ``device``, and its transpose as a contiguous tensor: signs
    hashed from :func:`iexact.seeds.matrix_seed` (:func:`iexact.seeds.row_signs`
    of :math:`D` rows of width :math:`k`), so the fused kernels make the same
    :math:`P` in place, and building it copies nothing from the host.

    Shapes:
        - **output:** :math:`(D, k)` and :math:`(k, D)`, float32.
    """
    projection = row_signs(matrix_seed(seed), 0, width, k, device).mul_(1.0 / math.sqrt(k))
    return projection, projection.t().contiguous()


class Projection:
    r"""The projection of one compressed tensor (kind, :math:`D`, :math:`k`, seed), on ``device``.

    Rows are projected and restored chunk by chunk; ``first_row`` places a
    chunk in the whole tensor so per-row signs are the same whatever the chunking.
    """

    def __init__(self, kind: str, width: int, k: int, seed: int, device: torch.device):
        if kind not in ALLOWED_PROJECTIONS:
            raise ValueError(f"projection={kind!r} is invalid: expected one of {', '.join(ALLOWED_PROJECTIONS)}")
        self.kind, self.width, self.k, self.seed, self.device = kind, width, k, seed, device
        self.slots = -(-width // k)  # the sketch's columns per bucket, at most
        if kind != "sketch":
            self.matrix, self.transpose = rademacher(width, k, seed, device)

    def _signs(self, first_row: int, rows: int) -> torch.Tensor:
        return row_signs(self.seed, first_row, rows, self.width, self.device)

    def forward(self, rows: torch.Tensor, first_row: int) -> torch.Tensor:
        r""":math:`Z` :math:`(n, k)` float32 of the rows :math:`H` :math:`(n, D)`."""
        rows = rows.float()
        if self.kind == "shared":
            return rows @ self.matrix
        signs = self._signs(first_row, rows.shape[0])
        if self.kind == "per_row":
            return (rows * signs) @ self.matrix
        # bucket j sums s h over columns j, j + k, ... slice by slice, in the fused kernel's order
        # (each s h exact, so z + h s is the one rounding the kernel makes too)
        z = torch.empty(rows.shape[0], self.k, dtype=torch.float32, device=rows.device)  # row-major whatever the input
        torch.mul(rows[:, : self.k], signs[:, : self.k], out=z)
        for slot in range(1, self.slots):  # the last slice may be narrower than k
            part = slice(slot * self.k, (slot + 1) * self.k)
            z[:, : rows[:, part].shape[1]].addcmul_(rows[:, part], signs[:, part])
        return z

    def inverse(self, z: torch.Tensor, first_row: int, out: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\hat H` :math:`(n, D)` of the stored rows :math:`\hat Z` :math:`(n, k)`,
        written into ``out`` (any float dtype) when given."""
        if self.kind == "shared":
            if out is not None and out.dtype == torch.float32:
                return torch.mm(z, self.transpose, out=out)
            restored = z @ self.transpose
        elif self.kind == "sketch" and self.slots * self.k == self.width:
            # h_(n, s k + j) = s_n,(s k + j) z_(n, j): z broadcast over the slots, one pass, written where asked
            rows = z.shape[0]
            signs = self._signs(first_row, rows).reshape(rows, self.slots, self.k)
            spread = z.unsqueeze(1).expand(rows, self.slots, self.k)
            if out is not None:
                torch.mul(spread, signs, out=out.view(rows, self.slots, self.k))
                return out
            return (spread * signs).view(rows, self.width)
        else:
            spread = z @ self.transpose if self.kind == "per_row" else z.repeat(1, self.slots)[:, : self.width]
            restored = spread * self._signs(first_row, z.shape[0])
        return restored if out is None else out.copy_(restored)
