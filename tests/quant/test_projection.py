"""The projections' random layouts: the count sketch's column order off the CPU."""

import torch

from iexact.quant.projection import column_order, hashed_order, sketch_buckets

WIDTH, SEEDS = 12, 6000


def test_the_cpu_order_is_torchs_randperm_and_elsewhere_the_hashed_one():
    cpu = column_order(WIDTH, 7, torch.device("cpu"))
    assert torch.equal(cpu, torch.randperm(WIDTH, generator=torch.Generator().manual_seed(7)))
    assert column_order(WIDTH, 7, torch.device("meta")).is_meta  # made on the device, nothing copied over


def test_the_hashed_order_is_a_uniformly_random_permutation():
    """Over many seeds each column lands in each position equally often and two
    columns share a bucket of the sketch (k = 4, 3 columns each) with the
    probability a uniform permutation gives, 2/11; both within 5 standard errors."""
    orders = torch.stack([hashed_order(WIDTH, seed, torch.device("cpu")) for seed in range(SEEDS)])
    assert torch.equal(orders.sort(1).values, torch.arange(WIDTH).expand(SEEDS, -1))
    counts = torch.stack([(orders == column).sum(0) for column in range(WIDTH)]).double()
    expected, spread = SEEDS / WIDTH, (SEEDS * (1 / WIDTH) * (1 - 1 / WIDTH)) ** 0.5
    assert (counts - expected).abs().max() < 5 * spread
    shared = 0
    for order in orders[:2000]:
        bucket = torch.empty(WIDTH, dtype=torch.int64)
        bucket[order] = torch.arange(WIDTH) % 4
        shared += int(bucket[0] == bucket[1])
    probability = 2 / 11
    assert abs(shared / 2000 - probability) < 5 * (probability * (1 - probability) / 2000) ** 0.5


def test_the_sketch_layout_holds_every_column_once():
    grid, bucket = sketch_buckets(10, 4, seed=3, device=torch.device("cpu"))
    slots = 3
    assert sorted(grid[grid < 10].tolist()) == list(range(10))
    for column in range(10):
        assert column in grid[bucket[column] * slots : (bucket[column] + 1) * slots].tolist()
