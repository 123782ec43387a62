"""Seeds and random streams: explicit generators, and dropout masks equal to FP32's."""

import copy

import pytest
import torch
from torch_geometric.nn.models import GAT, GraphSAGE

import iexact
from iexact import CompressionConfig
from iexact.seeds import SeedStream, _uniform_draws_are_bernoulli, generator_state, keep_mask, stream_seed

NODES, FEATURES = 80, 12


def _graph():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(NODES, FEATURES, generator=generator), torch.randint(0, NODES, (2, 400), generator=generator)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GraphSAGE(FEATURES, 16, num_layers=3, out_channels=4, norm="batch", dropout=0.5),
        lambda: GAT(FEATURES, 16, num_layers=2, out_channels=4, heads=2, dropout=0.5),
    ],
    ids=["GraphSAGE", "GAT"],
)
def test_training_forward_equals_the_fp32_twin_under_one_seed(make):
    """Compression changes what is kept, not what is computed: under the same
    seed the train-mode outputs (dropout masks included) are the FP32 twin's,
    and afterwards the global generator stands where the twin leaves it."""
    torch.manual_seed(0)
    model = make()
    twin = copy.deepcopy(model)
    iexact.compress_(model, CompressionConfig())
    x, edge_index = _graph()
    results = []
    for network in (model, twin):
        torch.manual_seed(5)
        out = network(x, edge_index)
        results.append((out, torch.rand(4)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    assert torch.equal(results[0][1], results[1][1])


def test_converting_and_compressing_leave_the_global_stream_alone():
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.ReLU(), torch.nn.BatchNorm1d(8))
    before = torch.get_rng_state()
    iexact.compress_(model, CompressionConfig())
    model(torch.randn(NODES, FEATURES, generator=torch.Generator())).sum().backward()
    assert torch.equal(torch.get_rng_state(), before)


def test_compression_noise_is_repeatable_per_torch_seed():
    def gradient(torch_seed):
        torch.manual_seed(torch_seed)
        layer = iexact.compress_(torch.nn.Linear(FEATURES, 8), CompressionConfig())
        x = torch.randn(NODES, FEATURES, generator=torch.Generator().manual_seed(1))
        layer(x).pow(2).sum().backward()
        return layer.weight.grad

    assert torch.equal(gradient(0), gradient(0))
    assert not torch.equal(gradient(0), gradient(1))


def test_seed_stream_state_round_trip():
    stream = SeedStream(11)
    state = stream.get_state()
    drawn = [stream.draw() for _ in range(3)]
    stream.set_state(state)
    assert [stream.draw() for _ in range(3)] == drawn and all(0 <= seed < 2**62 for seed in drawn)
    with pytest.raises(ValueError, match="seed must be an int in \\[0, 2\\*\\*62\\)"):
        SeedStream(-1)


def test_chunk_streams_are_distinct():
    seeds = {stream_seed(seed, offset) for seed in range(50) for offset in range(0, 50 * 2**20, 2**20)}
    assert len(seeds) == 2500 and all(0 <= seed < 2**62 for seed in seeds)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(5,), (300, 7), (2**16 + 3, 3)], ids=["tiny", "one-chunk", "chunks"])
def test_keep_masks_are_torchs_dropout_masks_bit_for_bit(dtype, shape):
    """The CPU mask is drawn from float64 uniforms in chunks (faster than
    ``bernoulli_``), yet equals ``bernoulli_(1 - p) / (1 - p)`` bit for bit,
    leaves the generator where ``bernoulli_`` does, and is redrawn from a snapshot."""
    p = 0.3
    assert _uniform_draws_are_bernoulli(dtype), "this torch build's bernoulli_ draws otherwise: the fast path is off"
    torch.manual_seed(4)
    state = generator_state(torch.device("cpu"))
    drawn = keep_mask(torch.empty(shape, dtype=dtype), p)
    after = torch.rand(3)
    torch.manual_seed(4)
    expected = torch.empty(shape, dtype=dtype).bernoulli_(1 - p).div_(1 - p)
    assert torch.equal(drawn, expected) and torch.equal(after, torch.rand(3))
    assert torch.equal(keep_mask(torch.empty(shape, dtype=dtype), p, state), expected)


def test_a_transposed_mask_is_drawn_as_bernoulli_draws_it():
    torch.manual_seed(2)
    drawn = keep_mask(torch.empty(40, 30).t(), 0.5)
    torch.manual_seed(2)
    assert torch.equal(drawn, torch.empty(40, 30).t().bernoulli_(0.5).div_(0.5))
