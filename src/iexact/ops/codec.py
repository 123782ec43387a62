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

import contextvars
import functools
import json
from typing import NamedTuple

import torch
from torch import Tensor

from .. import codec
from ..config import CompressionConfig
from ..quant import PackedActivation, levels_for
from ..seeds import SEED_LIMIT, advance, seed_at
from .direct import call


class Stored(NamedTuple):
    r"""A compressed activation as the autograd Functions keep it.

    Attributes:
        tensors (tuple): codes, mins, steps, the center when centered
            (:func:`iexact.codec.centered`) and, when projected, the seed as a
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
    """The :class:`PackedActivation` behind a :class:`Stored`'s tensors
    (:meth:`PackedActivation.from_tensors`, its layout from the config)."""
    k, block_size, _, _ = codec.stored_sizes(shape, config)
    layout = {
        "shape": torch.Size(shape),
        "dtype": dtype,
        "bits": config.bits,
        "block_size": block_size,
        "levels": levels_for(config.levels, config.bits, block_size),
        "projected_width": k,
        "projection": config.projection,
    }
    return PackedActivation.from_tensors(tuple(tensors), layout)


@torch.library.custom_op("iexact::compress", mutates_args=())
def _compress(x: Tensor, position: Tensor, spec: str, check: bool) -> list[Tensor]:
    packed = codec.compress(x, config_of(spec), seed_at(position), check=check)
    return list(packed.tensors())


@_compress.register_fake
def _(x, position, spec, check):
    config = config_of(spec)
    k, _, code_bytes, blocks = codec.stored_sizes(tuple(x.shape), config)
    held = [
        x.new_empty(code_bytes, dtype=torch.uint8),
        x.new_empty(blocks, dtype=config.scale_dtype),
        x.new_empty(blocks, dtype=config.scale_dtype),
    ]
    held += [x.new_empty(x.shape[-1], dtype=torch.float32)] if codec.centered(tuple(x.shape), config) else []
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


FINITE_CHECKS: contextvars.ContextVar[list | None] = contextvars.ContextVar("iexact_finite_checks", default=None)
"""While a converted model's forward runs (its hooks, :func:`start_finite_checks`),
the finite checks of its compressions, left on the device: ``(flag, shape,
dtype, config)`` each, ``flag`` a 0-dim bool; ``None`` elsewhere, where each
compression checks its own (one read from the device each)."""


def compress(x: Tensor, config: CompressionConfig, seed_state: Tensor | None) -> Stored:
    """``x`` compressed with ``config``, seeded from ``seed_state`` (a
    :class:`~iexact.seeds.SeedStream`'s ``state``; torch's global generator
    when ``None``). Its finite check joins :data:`FINITE_CHECKS` when a
    converted model's forward collects them (never in a compiled graph, where
    the operator checks inside, out of Dynamo's sight)."""
    position = torch.randint(0, SEED_LIMIT, (2,), dtype=torch.int64) if seed_state is None else advance(seed_state)
    spec = config.record_json
    checks = None if torch.compiler.is_compiling() or not config.check_finite else FINITE_CHECKS.get()
    tensors = call(_compress, x, position, spec, checks is None)
    if checks is not None:  # NaN or Inf anywhere in a block makes its step NaN or Inf
        checks.append((torch.isfinite(tensors[2]).all(), tuple(x.shape), x.dtype, config))
    return Stored(tuple(tensors), tuple(x.shape), x.dtype, spec)


def start_finite_checks() -> contextvars.Token | None:
    """Collect the finite checks of the compressions to come (a converted
    model's forward begins); ``None`` where an outer forward collects them
    already, or in a compiled graph."""
    if torch.compiler.is_compiling() or FINITE_CHECKS.get() is not None:
        return None
    return FINITE_CHECKS.set([])


def finish_finite_checks(token: contextvars.Token, raising: bool = True) -> None:
    """End what :func:`start_finite_checks` began: one read from the device for
    all the checks collected (the forward's only host sync), and with
    ``raising`` the error of the first tensor that held NaN or Inf."""
    checks = FINITE_CHECKS.get()
    FINITE_CHECKS.reset(token)
    if not raising or not checks:
        return
    device = checks[0][0].device  # a model across devices: its flags gathered by device-to-device copies
    if bool(torch.stack([flag.to(device) for flag, *_ in checks]).all()):
        return
    _, shape, dtype, config = next(check for check in checks if not bool(check[0]))
    raise codec.non_finite_error(shape, dtype, config)


def decompress(stored: Stored) -> Tensor:
    """The unbiased estimate of the tensor ``stored`` holds."""
    return call(_decompress, list(stored.tensors), list(stored.shape), stored.dtype, stored.spec)


def transpose_products(stored: Stored, *lefts: Tensor) -> list[Tensor]:
    r""":math:`A_j^\top \hat H` for each left factor (see :func:`iexact.codec.transpose_products`)."""
    return call(_transpose_products, list(stored.tensors), list(stored.shape), stored.dtype, list(lefts), stored.spec)
