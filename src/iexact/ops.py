r"""iexact's operators registered with ``torch.library``, for the autograd Functions.

Compressing reads a seed stream, computes quantization levels, runs
chunked loops and Triton kernels: nothing ``torch.compile`` should trace.
Registered as custom operators with fake (shape-only) implementations, each
is one opaque node of a compiled graph, so a compressed model compiles
without graph breaks and runs the same code eagerly and compiled:

- ``iexact::compress`` — :func:`iexact.codec.compress` with the seed drawn
  from a :class:`~iexact.seeds.SeedStream`'s state tensor (mutated in place);
- ``iexact::decompress`` and ``iexact::transpose_products`` — their codec
  counterparts on the stored tensors;
- ``iexact::dropout_keep`` / ``iexact::dropout_redraw`` — torch's own dropout
  mask after a snapshot of the default generator, and the same mask redrawn
  from that snapshot (drawn inside one op, so a compiled graph's RNG cannot
  come between the snapshot and the draw).

A config crosses the operator boundary as its codec fields (:func:`fields`).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from . import codec
from .config import CompressionConfig
from .quant import PackedActivation
from .quant.levels import levels_for
from .seeds import SEED_LIMIT, draw_from, generator_state, keep_mask


class Stored(NamedTuple):
    r"""A compressed activation as the autograd Functions keep it.

    Attributes:
        tensors (tuple): codes, mins, steps and, when projected, the seed as a
            0-dim int64 tensor (so their ``nbytes`` sum to the
            :class:`~iexact.quant.PackedActivation`'s).
        shape (tuple of int): the original shape.
        dtype (torch.dtype): the original dtype.
        fields (tuple): the config's codec fields (:func:`fields`).
    """

    tensors: tuple
    shape: tuple
    dtype: torch.dtype
    fields: tuple


def fields(config: CompressionConfig) -> tuple:
    """``(bits, block_size, rp_ratio, levels, scale_dtype, projection)`` with
    ``block_size`` 0 for ``"row"``: what the codec reads of ``config``."""
    block = 0 if config.block_size == "row" else config.block_size
    return (config.bits, block, float(config.rp_ratio), config.levels, config.scale_dtype, config.projection)


@functools.lru_cache(maxsize=64)
def _config(bits: int, block_size: int, rp_ratio: float, levels: str, scale_dtype: torch.dtype,
            projection: str) -> CompressionConfig:
    return CompressionConfig(bits=bits, block_size=block_size or "row", rp_ratio=rp_ratio, levels=levels,
                             scale_dtype=scale_dtype, projection=projection)


def _packed(tensors, shape, dtype: torch.dtype, config: CompressionConfig) -> PackedActivation:
    """The :class:`PackedActivation` behind a :class:`Stored`'s tensors."""
    k, block_size, _, _ = codec.stored_sizes(shape, config)
    seed = int(tensors[3]) if k is not None else 0
    return PackedActivation(tensors[0], tensors[1], tensors[2], torch.Size(shape), dtype, config.bits, block_size,
                            levels_for(config.levels, config.bits, block_size), k, seed, config.projection)


@torch.library.custom_op("iexact::compress", mutates_args=("seed_state",))
def _compress(x: Tensor, seed_state: Tensor, bits: int, block_size: int, rp_ratio: float, levels: str,
              scale_dtype: torch.dtype, projection: str) -> list[Tensor]:
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection)
    packed = codec.compress(x, config, draw_from(seed_state))
    held = [packed.codes, packed.mins, packed.steps]
    return held + ([torch.tensor(packed.seed, dtype=torch.int64)] if packed.projected_width is not None else [])


@_compress.register_fake
def _(x, seed_state, bits, block_size, rp_ratio, levels, scale_dtype, projection):
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection)
    k, _, code_bytes, blocks = codec.stored_sizes(tuple(x.shape), config)
    held = [x.new_empty(code_bytes, dtype=torch.uint8), x.new_empty(blocks, dtype=scale_dtype),
            x.new_empty(blocks, dtype=scale_dtype)]
    return held + ([torch.empty((), dtype=torch.int64)] if k is not None else [])


@torch.library.custom_op("iexact::decompress", mutates_args=())
def _decompress(tensors: list[Tensor], shape: list[int], dtype: torch.dtype, bits: int, block_size: int,
                rp_ratio: float, levels: str, scale_dtype: torch.dtype, projection: str) -> Tensor:
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection)
    return codec.decompress(_packed(tensors, shape, dtype, config))


@_decompress.register_fake
def _(tensors, shape, dtype, bits, block_size, rp_ratio, levels, scale_dtype, projection):
    return tensors[0].new_empty(shape, dtype=dtype)


@torch.library.custom_op("iexact::transpose_products", mutates_args=())
def _transpose_products(tensors: list[Tensor], shape: list[int], dtype: torch.dtype, lefts: list[Tensor],
                        bits: int, block_size: int, rp_ratio: float, levels: str, scale_dtype: torch.dtype,
                        projection: str) -> list[Tensor]:
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection)
    return codec.transpose_products(_packed(tensors, shape, dtype, config), *lefts)


@_transpose_products.register_fake
def _(tensors, shape, dtype, lefts, bits, block_size, rp_ratio, levels, scale_dtype, projection):
    width = shape[-1] if len(shape) else 1
    return [left.new_empty(left.shape[1], width, dtype=torch.float32) for left in lefts]


def compress(x: Tensor, config: CompressionConfig, seed_state: Tensor | None) -> Stored:
    """``x`` compressed with ``config``, seeded from ``seed_state`` (a
    :class:`~iexact.seeds.SeedStream`'s ``state``; torch's global generator
    when ``None``)."""
    if seed_state is None:
        seed_state = torch.randint(0, SEED_LIMIT, (2,), dtype=torch.int64)
    codec_fields = fields(config)
    return Stored(tuple(_compress(x, seed_state, *codec_fields)), tuple(x.shape), x.dtype, codec_fields)


def decompress(stored: Stored) -> Tensor:
    """The unbiased estimate of the tensor ``stored`` holds."""
    return _decompress(list(stored.tensors), list(stored.shape), stored.dtype, *stored.fields)


def transpose_products(stored: Stored, *lefts: Tensor) -> list[Tensor]:
    r""":math:`A_j^\top \hat H` for each left factor (see :func:`iexact.codec.transpose_products`)."""
    return _transpose_products(list(stored.tensors), list(stored.shape), stored.dtype, list(lefts), *stored.fields)


@torch.library.custom_op("iexact::dropout_keep", mutates_args=())
def _dropout_keep(like: Tensor, p: float) -> list[Tensor]:
    state = generator_state(like.device)
    return [keep_mask(torch.empty_like(like), p), state]


@_dropout_keep.register_fake
def _(like, p):
    size = torch.default_generator.get_state().numel() if like.device.type == "cpu" else 16  # Philox: seed, offset
    return [torch.empty_like(like), torch.empty(size, dtype=torch.uint8)]


@torch.library.custom_op("iexact::dropout_redraw", mutates_args=())
def _dropout_redraw(state: Tensor, like: Tensor, p: float) -> Tensor:
    return keep_mask(torch.empty_like(like), p, state)


@_dropout_redraw.register_fake
def _(state, like, p):
    return torch.empty_like(like)


def dropout_keep(like: Tensor, p: float) -> tuple[Tensor, Tensor]:
    r"""``(mask, state)``: the scaled keep-mask :math:`m / (1 - p)` that
    ``torch.nn.functional.dropout`` would draw for ``like`` (advancing torch's
    default generator as it does), and the generator snapshot taken before,
    :math:`0 < p < 1`."""
    mask, state = _dropout_keep(like, p)
    return mask, state


def dropout_redraw(state: Tensor, like: Tensor, p: float) -> Tensor:
    """The mask :func:`dropout_keep` drew, redrawn from its ``state``."""
    return _dropout_redraw(state, like, p)
