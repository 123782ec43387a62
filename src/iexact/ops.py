r"""iexact's operators registered with ``torch.library``, for the autograd Functions.

Compressing reads a seed stream, computes quantization levels, runs
chunked loops and Triton kernels: nothing ``torch.compile`` should trace.
Registered as custom operators with fake (shape-only) implementations, each
is one opaque node of a compiled graph, so a compressed model compiles
without graph breaks and runs the same code eagerly and compiled:

- ``iexact::compress`` — :func:`iexact.codec.compress` seeded at a position
  of a :class:`~iexact.seeds.SeedStream` (advanced by traced tensor ops,
  outside the operator, which so mutates nothing);
- ``iexact::decompress`` and ``iexact::transpose_products`` — their codec
  counterparts on the stored tensors;
- ``iexact::dropout_keep`` / ``iexact::dropout_redraw`` — torch's own dropout
  mask after a snapshot of the default generator, and the same mask redrawn
  from that snapshot (drawn inside one op, so a compiled graph's RNG cannot
  come between the snapshot and the draw);
- ``iexact::gcn_norm`` — PyG's ``gcn_norm`` on a ``(2, E)`` edge index,
  which backward recomputes and which inspects layouts (forbidden in a
  traced backward); its self-loops are added without boolean indexing
  (:func:`_padded_self_loops`: no host sync), as :math:`E + N` edges whose
  replaced loops weigh 0, so its size is known before the data.

A config crosses the operator boundary as its codec fields (:func:`fields`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm

from . import codec
from .config import CompressionConfig
from .quant import PackedActivation
from .quant.levels import levels_for
from .seeds import SEED_LIMIT, advance, generator_state, keep_mask, seed_at


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
    """``(bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite)``
    with ``block_size`` 0 for ``"row"`` and explicit levels as their exact
    ``float.hex`` values joined by commas: what the codec reads of ``config``."""
    block = 0 if config.block_size == "row" else config.block_size
    levels = config.levels if isinstance(config.levels, str) else ",".join(map(float.hex, config.levels))
    return (
        config.bits,
        block,
        float(config.rp_ratio),
        levels,
        config.scale_dtype,
        config.projection,
        config.check_finite,
    )


@functools.lru_cache(maxsize=64)
def _config(
    bits: int,
    block_size: int,
    rp_ratio: float,
    levels: str,
    scale_dtype: torch.dtype,
    projection: str,
    check_finite: bool,
) -> CompressionConfig:
    explicit = tuple(map(float.fromhex, levels.split(","))) if "," in levels else levels
    return CompressionConfig(
        bits=bits,
        block_size=block_size or "row",
        rp_ratio=rp_ratio,
        levels=explicit,
        scale_dtype=scale_dtype,
        projection=projection,
        check_finite=check_finite,
    )


def config_of(fields_: tuple) -> CompressionConfig:
    """The config whose :func:`fields` are ``fields_`` (what ``iexact::compress`` was given)."""
    return _config(*fields_)


def _packed(tensors, shape, dtype: torch.dtype, config: CompressionConfig) -> PackedActivation:
    """The :class:`PackedActivation` behind a :class:`Stored`'s tensors."""
    k, block_size, _, _ = codec.stored_sizes(shape, config)
    seed = int(tensors[3]) if k is not None else 0
    return PackedActivation(
        tensors[0],
        tensors[1],
        tensors[2],
        torch.Size(shape),
        dtype,
        config.bits,
        block_size,
        levels_for(config.levels, config.bits, block_size),
        k,
        seed,
        config.projection,
    )


@torch.library.custom_op("iexact::compress", mutates_args=())
def _compress(
    x: Tensor,
    position: Tensor,
    bits: int,
    block_size: int,
    rp_ratio: float,
    levels: str,
    scale_dtype: torch.dtype,
    projection: str,
    check_finite: bool,
) -> list[Tensor]:
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite)
    packed = codec.compress(x, config, seed_at(position))
    held = [packed.codes, packed.mins, packed.steps]
    return held + ([torch.tensor(packed.seed, dtype=torch.int64)] if packed.projected_width is not None else [])


@_compress.register_fake
def _(x, position, bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite):
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite)
    k, _, code_bytes, blocks = codec.stored_sizes(tuple(x.shape), config)
    held = [
        x.new_empty(code_bytes, dtype=torch.uint8),
        x.new_empty(blocks, dtype=scale_dtype),
        x.new_empty(blocks, dtype=scale_dtype),
    ]
    return held + ([torch.empty((), dtype=torch.int64)] if k is not None else [])


@torch.library.custom_op("iexact::decompress", mutates_args=())
def _decompress(
    tensors: list[Tensor],
    shape: list[int],
    dtype: torch.dtype,
    bits: int,
    block_size: int,
    rp_ratio: float,
    levels: str,
    scale_dtype: torch.dtype,
    projection: str,
    check_finite: bool,
) -> Tensor:
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite)
    return codec.decompress(_packed(tensors, shape, dtype, config), check=False)


@_decompress.register_fake
def _(tensors, shape, dtype, bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite):
    return tensors[0].new_empty(shape, dtype=dtype)


@torch.library.custom_op("iexact::transpose_products", mutates_args=())
def _transpose_products(
    tensors: list[Tensor],
    shape: list[int],
    dtype: torch.dtype,
    lefts: list[Tensor],
    bits: int,
    block_size: int,
    rp_ratio: float,
    levels: str,
    scale_dtype: torch.dtype,
    projection: str,
    check_finite: bool,
) -> list[Tensor]:
    config = _config(bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite)
    return codec.transpose_products(_packed(tensors, shape, dtype, config), *lefts)


@_transpose_products.register_fake
def _(tensors, shape, dtype, lefts, bits, block_size, rp_ratio, levels, scale_dtype, projection, check_finite):
    width = shape[-1] if len(shape) else 1
    return [left.new_empty(left.shape[1], width, dtype=torch.float32) for left in lefts]


def compress(x: Tensor, config: CompressionConfig, seed_state: Tensor | None) -> Stored:
    """``x`` compressed with ``config``, seeded from ``seed_state`` (a
    :class:`~iexact.seeds.SeedStream`'s ``state``; torch's global generator
    when ``None``)."""
    position = torch.randint(0, SEED_LIMIT, (2,), dtype=torch.int64) if seed_state is None else advance(seed_state)
    codec_fields = fields(config)
    return Stored(tuple(_compress(x, position, *codec_fields)), tuple(x.shape), x.dtype, codec_fields)


def decompress(stored: Stored) -> Tensor:
    """The unbiased estimate of the tensor ``stored`` holds."""
    return _decompress(list(stored.tensors), list(stored.shape), stored.dtype, *stored.fields)


def transpose_products(stored: Stored, *lefts: Tensor) -> list[Tensor]:
    r""":math:`A_j^\top \hat H` for each left factor (see :func:`iexact.codec.transpose_products`)."""
    return _transpose_products(list(stored.tensors), list(stored.shape), stored.dtype, list(lefts), *stored.fields)


def _scaled_mask(like: Tensor, p: float, valid: Tensor | None, state: Tensor | None) -> Tensor:
    """:func:`keep_mask` for ``like``, or for its rows in ``valid`` only (zeros elsewhere)."""
    if valid is None:
        return keep_mask(torch.empty_like(like), p, state)
    mask = like.new_zeros(like.shape)
    mask[valid] = keep_mask(like.new_empty(int(valid.sum()), *like.shape[1:]), p, state)
    return mask


@torch.library.custom_op("iexact::dropout_keep", mutates_args=())
def _dropout_keep(like: Tensor, p: float, valid: Tensor | None) -> list[Tensor]:
    state = generator_state(like.device)
    return [_scaled_mask(like, p, valid, None), state]


@_dropout_keep.register_fake
def _(like, p, valid):
    size = torch.default_generator.get_state().numel() if like.device.type == "cpu" else 16  # Philox: seed, offset
    return [torch.empty_like(like), torch.empty(size, dtype=torch.uint8)]


@torch.library.custom_op("iexact::dropout_redraw", mutates_args=())
def _dropout_redraw(state: Tensor, like: Tensor, p: float, valid: Tensor | None) -> Tensor:
    return _scaled_mask(like, p, valid, state)


@_dropout_redraw.register_fake
def _(state, like, p, valid):
    return torch.empty_like(like)


def dropout_keep(like: Tensor, p: float, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""``(mask, state)``: the scaled keep-mask :math:`m / (1 - p)` that
    ``torch.nn.functional.dropout`` would draw for ``like`` (advancing torch's
    default generator as it does), and the generator snapshot taken before,
    :math:`0 < p < 1`. With ``valid``, the mask is drawn for ``like[valid]``
    (as dropout of that tensor draws it) and is 0 on the other rows."""
    mask, state = _dropout_keep(like, p, valid)
    return mask, state


def dropout_redraw(state: Tensor, like: Tensor, p: float, valid: Tensor | None = None) -> Tensor:
    """The mask :func:`dropout_keep` drew, redrawn from its ``state``."""
    return _dropout_redraw(state, like, p, valid)


def _fresh(result: Tensor, source: Tensor) -> Tensor:
    """``result``, copied if it shares ``source``'s memory (an operator's outputs may not alias its inputs)."""
    return result.clone() if result.untyped_storage().data_ptr() == source.untyped_storage().data_ptr() else result


def _padded_self_loops(
    edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int, fill: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    r"""PyG's ``add_remaining_self_loops`` without reading the data back
    (no boolean indexing, so no host sync): the :math:`E` edges stay in place,
    self-loops among them with weight 0, then one loop :math:`i \to i` per node
    weighted as the last existing loop on :math:`i` (PyG keeps that one), else
    ``fill``: :math:`E + N` edges."""
    count = edge_index.shape[1]
    row, col = edge_index[0], edge_index[1]
    weight = torch.ones(count, dtype=dtype, device=row.device) if edge_weight is None else edge_weight
    is_loop = row == col
    spare = torch.full((num_nodes + 1,), -1, dtype=torch.int64, device=row.device)  # slot N takes the non-loops
    last = spare.scatter_reduce_(
        0, torch.where(is_loop, row, num_nodes), torch.arange(count, device=row.device), "amax"
    )[:num_nodes]
    # the last loop's weight, or ``fill`` (appended at position E) where a node has none
    extended = torch.cat([weight, weight.new_full((1,), fill)])
    loop_weight = extended[torch.where(last >= 0, last, count)]
    loops = torch.arange(num_nodes, dtype=edge_index.dtype, device=row.device)
    return (
        torch.cat([edge_index, torch.stack([loops, loops])], dim=1),
        torch.cat([weight.masked_fill(is_loop, 0), loop_weight]),
    )


@torch.library.custom_op("iexact::gcn_norm", mutates_args=())
def _gcn_norm(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    num_nodes: int,
    improved: bool,
    self_loops: bool,
    flow: str,
    dtype: torch.dtype,
) -> list[Tensor]:
    if not self_loops:
        index, weight = pyg_gcn_norm(edge_index, edge_weight, num_nodes, improved, self_loops, flow, dtype)
        return [_fresh(index, edge_index), weight if edge_weight is None else _fresh(weight, edge_weight)]
    # as PyG: the added loops weigh 2 when improved only if the graph has edge weights
    fill = 2.0 if improved and edge_weight is not None else 1.0
    index, weight = _padded_self_loops(edge_index, edge_weight, num_nodes, fill, dtype)
    return list(pyg_gcn_norm(index, weight, num_nodes, improved, False, flow, dtype))


@_gcn_norm.register_fake
def _(edge_index, edge_weight, num_nodes, improved, self_loops, flow, dtype):
    count = edge_index.shape[1] + (num_nodes if self_loops else 0)
    return [edge_index.new_empty(2, count), edge_index.new_empty(count, dtype=dtype)]


def gcn_norm(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    num_nodes: int,
    improved: bool,
    self_loops: bool,
    flow: str,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    r"""PyG's ``gcn_norm`` of a plain ``(2, E)`` ``edge_index`` (not differentiable):
    ``(edge_index, weight)`` of :math:`\hat D^{-1/2} \hat A \hat D^{-1/2}`; with
    self-loops, :math:`E + N` edges (the graph's own loops kept with weight 0)."""
    index, weight = _gcn_norm(edge_index, edge_weight, num_nodes, improved, self_loops, flow, dtype)
    return index, weight
