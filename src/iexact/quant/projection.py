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
- ``"sketch"`` (count sketch): the columns, in a random order drawn once
  per :math:`(D, k)` (:func:`sketch_buckets`), are dealt round-robin into
  :math:`k` buckets :math:`B_j` of :math:`\lfloor D/k \rfloor` or
  :math:`\lceil D/k \rceil`; :math:`z_j = \sum_{d \in B_j} s_{n,d} h_d`,
  :math:`\hat h_d = s_{n,d} z_{j(d)}`. Unbiased (the signs are drawn per
  tensor), :math:`\mathrm{Var}(\hat h_d) = \sum_{d' \in B_{j(d)}, d' \ne d}
  h_{d'}^2`, less than the dense kinds', errors independent from row to row,
  and :math:`O(D)` work per row instead of :math:`O(D k)`. Summed over a row
  the variance is :math:`\sum_j (|B_j| - 1) \sum_{d \in B_j} h_d^2`, about
  :math:`(D/k - 1) \lVert h \rVert^2` whichever columns share a bucket: the
  error of a weight gradient :math:`dY^\top \hat H` (its Frobenius norm) does
  not depend on the partition, so one fixed random partition per width
  serves every tensor, and the fused kernels read it from a table made once
  per device instead of drawing it per tensor.
"""

from __future__ import annotations

import functools
import math

import torch

from ..config import ALLOWED_PROJECTIONS
from ..seeds import hashed_words, row_signs


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


def hashed_order(width: int, seed: int, device: torch.device) -> torch.Tensor:
    """The order that sorts a hash of ``(seed, column)``
    (:func:`iexact.seeds.hashed_words`): distinct 64-bit keys, so a uniformly
    random permutation, made with device ops alone."""
    return torch.argsort(hashed_words(seed, torch.arange(width, device=device)))


SKETCH_ORDER_SEED = 0x5E7C4  # the seed of the sketch's one column order per (D, k)


@functools.lru_cache(maxsize=64)
def sketch_buckets(width: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The count sketch's layout for rows of ``width`` projected to ``k``:
    ``grid`` :math:`(b \cdot k,)`, slot-major (entry :math:`s k + j` is the
    :math:`s`-th column of bucket :math:`j`, :math:`b = \lceil D/k \rceil`;
    empty slots hold :math:`D`, a zero pad), and ``bucket`` :math:`(D,)`, the
    bucket of every column. The columns are taken in the order of
    :func:`hashed_order` with :data:`SKETCH_ORDER_SEED`; position :math:`p`
    goes to bucket :math:`p \bmod k`.

    Made once per ``(width, k, device)`` with device ops and shared (never
    written): building it copies nothing from the host."""
    order = hashed_order(width, SKETCH_ORDER_SEED, device)
    slots = -(-width // k)
    grid = torch.cat([order, torch.full((slots * k - width,), width, dtype=torch.int64, device=device)])
    bucket = torch.empty(width, dtype=torch.int64, device=device)
    bucket[order] = torch.arange(width, device=device) % k
    return grid, bucket


class Projection:
    r"""The projection of one compressed tensor (kind, :math:`D`, :math:`k`, seed), on ``device``.

    Rows are projected and restored chunk by chunk; ``first_row`` places a
    chunk in the whole tensor so per-row signs are the same whatever the chunking.
    """

    def __init__(self, kind: str, width: int, k: int, seed: int, device: torch.device):
        if kind not in ALLOWED_PROJECTIONS:
            raise ValueError(f"projection={kind!r} is invalid: expected one of {', '.join(ALLOWED_PROJECTIONS)}")
        self.kind, self.width, self.k, self.seed, self.device = kind, width, k, seed, device
        if kind == "sketch":
            self.grid, self.bucket = sketch_buckets(width, k, torch.device(device))
        else:
            self.matrix, self.transpose = rademacher(width, k, seed, device)

    def _signs(self, first_row: int, rows: int) -> torch.Tensor:
        return row_signs(self.seed, first_row, rows, self.width, self.device)

    def forward(self, rows: torch.Tensor, first_row: int) -> torch.Tensor:
        r""":math:`Z` :math:`(n, k)` float32 of the rows :math:`H` :math:`(n, D)`."""
        rows = rows.float()
        if self.kind == "shared":
            return rows @ self.matrix
        signed = rows * self._signs(first_row, rows.shape[0])
        if self.kind == "per_row":
            return signed @ self.matrix
        slots = torch.nn.functional.pad(signed, (0, 1)).index_select(1, self.grid).view(rows.shape[0], -1, self.k)
        z = slots[:, 0] + slots[:, 1]  # summed slot by slot, in the fused kernel's order
        for slot in range(2, slots.shape[1]):
            z += slots[:, slot]
        return z

    def inverse(self, z: torch.Tensor, first_row: int, out: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\hat H` :math:`(n, D)` of the stored rows :math:`\hat Z` :math:`(n, k)`,
        written into ``out`` (any float dtype) when given."""
        if self.kind == "shared":
            if out is not None and out.dtype == torch.float32:
                return torch.mm(z, self.transpose, out=out)
            restored = z @ self.transpose
        else:
            spread = z @ self.transpose if self.kind == "per_row" else z.index_select(1, self.bucket)
            restored = spread.mul_(self._signs(first_row, z.shape[0]))
        return restored if out is None else out.copy_(restored)
