r"""The codec as operators: ``iexact::compress``, ``iexact::decompress`` and
``iexact::transpose_products``.

- ``iexact::compress`` — :func:`iexact.codec.compress` seeded at a position
  of a :class:`~iexact.seeds.SeedStream` (advanced by traced tensor ops,
  outside the operator, which so mutates nothing);
- ``iexact::decompress`` and ``iexact::transpose_products`` — their codec
  counterparts on the stored tensors.

A config crosses the operator boundary as one string, its versioned
:meth:`~iexact.CompressionConfig.to_dict` record in JSON
(:attr:`~iexact.CompressionConfig.record_json`, read back by
:func:`config_of`): a field added to the config needs no edit here.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import torch
from torch import Tensor

from .. import codec
from ..config import CompressionConfig
from ..quant import PackedActivation, levels_for
from ..seeds import SEED_LIMIT, advance, seed_at


class Stored(NamedTuple):
    r"""A compressed activation as the autograd Functions keep it.

    Attributes:
        tensors (tuple): codes, mins, steps and, when projected, the seed as a
            0-dim int64 tensor (so their ``nbytes`` sum to the
            :class:`~iexact.quant.PackedActivation`'s).
        shape (tuple of int): the original shape.
        dtype (torch.dtype): the original dtype.
        spec (str): the config, as :attr:`~iexact.CompressionConfig.record_json`.
    """

    tensors: tuple
    shape: tuple
    dtype: torch.dtype
    spec: str


@functools.lru_cache(maxsize=256)
def config_of(spec: str) -> CompressionConfig:
    """The config whose :attr:`~iexact.CompressionConfig.record_json` is ``spec``."""
    return CompressionConfig.from_dict(json.loads(spec))


def _packed(tensors, shape, dtype: torch.dtype, config: CompressionConfig) -> PackedActivation:
    """The :class:`PackedActivation` behind a :class:`Stored`'s tensors."""
    k, block_size, _, _ = codec.stored_sizes(shape, config)
    seed = int(tensors[3]) if k is not None else 0
    levels = levels_for(config.levels, config.bits, block_size)
    return PackedActivation(
        tensors[0],
        tensors[1],
        tensors[2],
        torch.Size(shape),
        dtype,
        config.bits,
        block_size,
        levels,
        k,
        seed,
        config.projection,
    )


@torch.library.custom_op("iexact::compress", mutates_args=())
def _compress(x: Tensor, position: Tensor, spec: str) -> list[Tensor]:
    packed = codec.compress(x, config_of(spec), seed_at(position))
    held = [packed.codes, packed.mins, packed.steps]
    return held + ([torch.tensor(packed.seed, dtype=torch.int64)] if packed.projected_width is not None else [])


@_compress.register_fake
def _(x, position, spec):
    config = config_of(spec)
    k, _, code_bytes, blocks = codec.stored_sizes(tuple(x.shape), config)
    held = [
        x.new_empty(code_bytes, dtype=torch.uint8),
        x.new_empty(blocks, dtype=config.scale_dtype),
        x.new_empty(blocks, dtype=config.scale_dtype),
    ]
    return held + ([torch.empty((), dtype=torch.int64)] if k is not None else [])


@torch.library.custom_op("iexact::decompress", mutates_args=())
def _decompress(tensors: list[Tensor], shape: list[int], dtype: torch.dtype, spec: str) -> Tensor:
    return codec.decompress(_packed(tensors, shape, dtype, config_of(spec)), check=False)


@_decompress.register_fake
def _(tensors, shape, dtype, spec):
    return tensors[0].new_empty(shape, dtype=dtype)


@torch.library.custom_op("iexact::transpose_products", mutates_args=())
def _transpose_products(
    tensors: list[Tensor], shape: list[int], dtype: torch.dtype, lefts: list[Tensor], spec: str
) -> list[Tensor]:
    return codec.transpose_products(_packed(tensors, shape, dtype, config_of(spec)), *lefts)


@_transpose_products.register_fake
def _(tensors, shape, dtype, lefts, spec):
    width = shape[-1] if len(shape) else 1
    return [left.new_empty(left.shape[1], width, dtype=torch.float32) for left in lefts]


def compress(x: Tensor, config: CompressionConfig, seed_state: Tensor | None) -> Stored:
    """``x`` compressed with ``config``, seeded from ``seed_state`` (a
    :class:`~iexact.seeds.SeedStream`'s ``state``; torch's global generator
    when ``None``)."""
    position = torch.randint(0, SEED_LIMIT, (2,), dtype=torch.int64) if seed_state is None else advance(seed_state)
    spec = config.record_json
    return Stored(tuple(_compress(x, position, spec)), tuple(x.shape), x.dtype, spec)


def decompress(stored: Stored) -> Tensor:
    """The unbiased estimate of the tensor ``stored`` holds."""
    return _decompress(list(stored.tensors), list(stored.shape), stored.dtype, stored.spec)


def transpose_products(stored: Stored, *lefts: Tensor) -> list[Tensor]:
    r""":math:`A_j^\top \hat H` for each left factor (see :func:`iexact.codec.transpose_products`)."""
    return _transpose_products(list(stored.tensors), list(stored.shape), stored.dtype, list(lefts), stored.spec)
