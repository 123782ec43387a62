"""The count sketch's layout and the error it gives."""

import torch

from iexact.quant.projection import Projection
from iexact.seeds import row_signs


def test_column_d_goes_to_bucket_d_mod_k_with_its_sign():
    """A row with one nonzero column lands in bucket d mod k, times that
    column's sign, and comes back in place (13 columns, k = 4: the last
    slice holds one column)."""
    width, k = 13, 4
    signs = row_signs(7, 0, 1, width, "cpu")[0]
    for column in range(width):
        row = torch.zeros(1, width)
        row[0, column] = 2.0
        z = Projection("sketch", width, k, 7, "cpu").forward(row, 0)[0]
        expected = torch.zeros(k)
        expected[column % k] = 2.0 * signs[column]
        assert torch.equal(z, expected)
        restored = Projection("sketch", width, k, 7, "cpu").inverse(z.unsqueeze(0), 0)[0]
        assert restored[column] == 2.0 and (restored[torch.arange(width) % k != column % k] == 0).all()


def test_the_sketch_error_does_not_depend_on_which_columns_share_a_bucket():
    r"""Summed over a row the sketch's variance is :math:`\sum_j (|B_j| - 1)
    \sum_{d \in B_j} h_d^2` (the per-tensor signs alone make it so): measured
    over 4000 seeds within 5 %, and the same sum for a random partition into
    buckets of the same sizes: the weight gradient's error (its Frobenius
    norm) is the same whichever partition."""
    width, k, seeds = 12, 4, 4000
    h = torch.linspace(-3.0, 2.0, width, dtype=torch.float64).unsqueeze(0)
    errors = torch.stack(
        [
            Projection("sketch", width, k, seed, "cpu")
            .inverse(Projection("sketch", width, k, seed, "cpu").forward(h, 0), 0)
            .double()
            - h
            for seed in range(seeds)
        ]
    )
    bucket = torch.arange(width) % k
    sizes = torch.bincount(bucket, minlength=k).double()
    expected = ((sizes - 1) * torch.zeros(k, dtype=torch.float64).index_add_(0, bucket, h[0] ** 2)).sum()
    assert abs(errors.pow(2).sum(-1).mean() / expected - 1) < 0.05
    shuffled = bucket[torch.randperm(width, generator=torch.Generator().manual_seed(0))]
    other = ((sizes - 1) * torch.zeros(k, dtype=torch.float64).index_add_(0, shuffled, h[0] ** 2)).sum()
    assert torch.isclose(other, expected)
