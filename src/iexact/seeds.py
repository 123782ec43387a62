r"""Seeds and random streams, all of them here.

Three kinds of randomness, each drawn from an explicit source:

- **Compression seeds** (the projection and the rounding noise of one
  compressed tensor) come from a :class:`SeedStream`, a counter-based
  stream whose whole state is a 2-element int64 CPU tensor that the
  converted modules share. Compressing never draws from torch's global
  generator, so a compressed model consumes the global stream exactly as
  its FP32 twin does; and the state being a tensor, the compression op
  (:mod:`iexact.ops`) advances it inside a ``torch.compile`` graph.
- **Chunk noise streams**: the rounding noise of the chunk at ``offset`` of a
  tensor compressed with ``seed`` is seeded by :func:`stream_seed`, a
  SplitMix64 hash, so chunks and nearby seeds draw unrelated noise.
- **Dropout keep-masks** are drawn from torch's default generator with the
  very draws torch's dropout makes, :math:`m = \mathrm{Bernoulli}(1 - p)`
  then :math:`m / (1 - p)` (on CPU as :math:`[u < 1 - p]` from one float64
  uniform per element, which is what ``bernoulli_`` draws, in 40 % of its time),
  after a snapshot of that generator's state
  (:func:`generator_state`); backward redraws the same mask from the
  snapshot. Under the same ``torch.manual_seed`` a converted model's masks
  are its FP32 twin's, bit for bit on CPU.
"""

from __future__ import annotations

import functools

import torch

SEED_LIMIT = 2**62  # seeds are drawn in [0, 2**62)
_MASK64 = 2**64 - 1


def splitmix64(value: int) -> int:
    """SplitMix64 finalizer: a bijective 64-bit mix with full avalanche."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def stream_seed(seed: int, offset: int) -> int:
    """Seed of the rounding noise for the chunk at ``offset`` of a tensor
    compressed with ``seed``: well mixed, so nearby seeds and offsets give
    unrelated streams (and differ from the projection's ``seed``)."""
    return splitmix64(seed ^ splitmix64(offset + 1)) >> 2


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A seed in :math:`[0, 2^{62})` from ``generator`` (torch's global one when ``None``)."""
    return int(torch.randint(0, SEED_LIMIT, (), dtype=torch.int64, generator=generator))


def check_seed(seed) -> int:
    """``seed`` if it is an int in :math:`[0, 2^{62})`, else a ValueError naming the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed={seed!r} is invalid: seed must be an int in [0, 2**62)")
    return seed


def seed_at(position: torch.Tensor) -> int:
    r"""The seed at ``position`` = ``[key, counter]`` of a stream (int64, CPU):
    :math:`\text{SplitMix64}(\text{key} \oplus \text{SplitMix64}(\text{counter})) / 4`."""
    key, counter = position.tolist()
    return splitmix64((key & _MASK64) ^ splitmix64(counter & _MASK64)) >> 2


def advance(state: torch.Tensor) -> torch.Tensor:
    """The current position of the stream ``state`` (a copy), moving ``state``
    one step on. Two tensor ops, so a compiled graph traces them."""
    position = state.clone()
    state[1] += 1
    return position


class SeedStream:
    r"""Compression seeds from a counter-based stream.

    :func:`iexact.compress_` gives the modules it converts one shared stream,
    seeded from ``torch.initial_seed()`` (read, not drawn: the global stream
    does not move), so ``torch.manual_seed(s)`` before converting makes the
    compression noise repeatable. The state is the CPU tensor ``state`` =
    ``[key, counter]`` (see :func:`seed_at`): drawing reads no device
    memory, and a compiled graph advances it like any buffer.

    Args:
        seed (int): the stream's key, in :math:`[0, 2^{62})`.
    """

    def __init__(self, seed: int):
        self.state = torch.tensor([check_seed(seed), 0], dtype=torch.int64)

    @classmethod
    def from_torch_seed(cls) -> SeedStream:
        """A stream seeded from ``torch.initial_seed()`` (mixed, so it differs from torch's own stream)."""
        return cls(splitmix64(torch.initial_seed() ^ 0x1E7AC7) >> 2)

    def draw(self) -> int:
        """The next seed."""
        return seed_at(advance(self.state))

    def get_state(self) -> torch.Tensor:
        """A copy of the state (to checkpoint); :meth:`set_state` restores it."""
        return self.state.clone()

    def set_state(self, state: torch.Tensor) -> None:
        """Restore a :meth:`get_state` copy.

        Raises:
            ValueError: ``state`` is not a 2-element int64 tensor.
        """
        if not isinstance(state, torch.Tensor) or state.dtype != torch.int64 or state.shape != (2,):
            raise ValueError(
                f"a SeedStream state is a 2-element int64 tensor [key, counter], got "
                f"{getattr(state, 'dtype', type(state).__name__)} {tuple(getattr(state, 'shape', ()))}"
            )
        self.state.copy_(state)


def generator_state(device: torch.device) -> torch.Tensor:
    """A snapshot of torch's default generator on ``device`` (uint8 tensor: 5,056
    bytes for the CPU's Mersenne Twister, 16 for CUDA's Philox seed and offset)."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.default_generator.get_state()
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    raise ValueError(f"dropout masks on {device.type} are not supported: use a cpu or cuda device")


def keep_mask(empty: torch.Tensor, p: float, state: torch.Tensor | None = None) -> torch.Tensor:
    r"""Fill ``empty`` with the scaled keep-mask :math:`m / (1 - p)`,
    :math:`m_i \sim \mathrm{Bernoulli}(1 - p)`, as torch's dropout draws it
    (``bernoulli_(1 - p)`` then ``div_(1 - p)`` on a tensor laid out like its
    input; bit for bit the same from :func:`_keep_from_uniforms` on CPU).

    Args:
        empty (torch.Tensor): the tensor to fill, laid out like the dropped input.
        p (float): drop probability in :math:`(0, 1)`.
        state (torch.Tensor, optional): a :func:`generator_state` snapshot to
            redraw from; ``None`` draws from (and advances) torch's default
            generator, as dropout itself does.
    """
    generator = None
    if state is not None:
        generator = torch.Generator(device=empty.device)
        generator.set_state(state)
    if empty.device.type == "cpu" and empty.is_contiguous() and _uniform_draws_are_bernoulli(empty.dtype):
        _keep_from_uniforms(empty, 1.0 - p, generator)
    else:
        empty.bernoulli_(1.0 - p, generator=generator)
    return empty.div_(1.0 - p)


_UNIFORM_CHUNK = 2**16  # float64 uniforms drawn at a time: 512 KiB, whatever the mask's size


def _keep_from_uniforms(out: torch.Tensor, q: float, generator: torch.Generator | None) -> None:
    r"""Fill the contiguous CPU tensor ``out`` with :math:`[u_i < q]`,
    :math:`u_i` one float64 ``uniform_`` draw per element in memory order: the
    very draws and comparison of torch's CPU ``bernoulli_(q)`` (its serial
    kernel), in 40 % of its time, in chunks of :data:`_UNIFORM_CHUNK` elements."""
    flat = out.view(-1)
    uniforms = torch.empty(min(flat.numel(), _UNIFORM_CHUNK), dtype=torch.float64)
    for start in range(0, flat.numel(), _UNIFORM_CHUNK):
        part = flat[start : start + _UNIFORM_CHUNK]
        torch.lt(uniforms[: part.numel()].uniform_(generator=generator), q, out=part)


@functools.lru_cache(maxsize=16)
def _uniform_draws_are_bernoulli(dtype: torch.dtype) -> bool:
    """Whether :func:`_keep_from_uniforms` gives torch's CPU ``bernoulli_`` bit
    for bit into ``dtype``, and leaves the generator where it does: checked once
    per dtype on a probe (a build whose ``bernoulli_`` draws otherwise, as with
    MKL's vector generator, keeps ``bernoulli_`` itself)."""
    generator = torch.Generator().manual_seed(0x5EED)
    start = generator.get_state()
    expected = torch.empty(3 * 1000 + 7, dtype=dtype).bernoulli_(0.3, generator=generator)
    end = generator.get_state()
    generator.set_state(start)
    drawn = torch.empty_like(expected)
    _keep_from_uniforms(drawn, 0.3, generator)
    return torch.equal(drawn, expected) and torch.equal(generator.get_state(), end)


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 torch stores."""
    return value - 2**64 if value >= 2**63 else value


_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(value: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (value >> bits) & ((1 << (64 - bits)) - 1)


def hash_key(seed: int) -> int:
    r"""What :func:`hashed_words` adds to every counter of ``seed``'s stream,
    :math:`(\text{SplitMix64}(\text{seed}) + \varphi) \bmod 2^{64}`, as an
    unsigned 64-bit int (the Triton kernels hash with it too)."""
    return (splitmix64(seed) + 0x9E3779B97F4A7C15) & _MASK64


def hashed_words(seed: int, counters: torch.Tensor) -> torch.Tensor:
    """SplitMix64 of ``seed``'s stream at ``counters`` (int64, wrapping arithmetic):
    a counter-based stream, so any chunk of it is computed without the rest."""
    value = counters + _signed(hash_key(seed))
    value = (value ^ _shift_right(value, 30)) * _MIX1
    value = (value ^ _shift_right(value, 27)) * _MIX2
    return value ^ _shift_right(value, 31)


@functools.lru_cache(maxsize=8)
def _sign_table(device: torch.device) -> torch.Tensor:
    """``table[byte, i]`` = :math:`1 - 2 \\cdot` bit :math:`i` of ``byte``: ``(256, 8)`` float32."""
    bits = (torch.arange(256, device=device).unsqueeze(1) >> torch.arange(8, device=device)) & 1
    return (1 - 2 * bits).to(torch.float32)


def sign_seed(seed: int) -> int:
    r"""The stream :func:`row_signs` hashes for a tensor compressed with ``seed``:
    the sign of :math:`(n, d)` is bit :math:`d \bmod 64` of its word
    :math:`n \lceil D/64 \rceil + \lfloor d/64 \rfloor`."""
    return seed ^ 0x5167


def matrix_seed(seed: int) -> int:
    r"""The stream of the dense projections' matrix :math:`P` for a tensor
    compressed with ``seed``: the sign of :math:`P_{d,j}` is that of row
    :math:`d`, column :math:`j` of :func:`row_signs` of this stream and width :math:`k`."""
    return seed ^ 0x3A71


def row_signs(seed: int, first_row: int, rows: int, width: int, device) -> torch.Tensor:
    r"""Random signs :math:`s_{n,d} \in \{\pm 1\}` of rows ``first_row`` to
    ``first_row + rows - 1``, independent across rows and columns, a function of
    ``(seed, n, d)`` only (so chunks of a tensor draw their own part).

    Shapes:
        - **output:** :math:`(\text{rows}, \text{width})` float32
    """
    words = -(-width // 64)
    first = first_row * words
    counters = torch.arange(first, first + rows * words, dtype=torch.int64, device=device)
    raw = hashed_words(sign_seed(seed), counters).view(torch.uint8).to(torch.int32)
    return torch.nn.functional.embedding(raw, _sign_table(torch.device(device))).view(rows, words * 64)[:, :width]
