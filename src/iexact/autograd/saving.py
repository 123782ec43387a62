r"""What iexact's autograd Functions keep, and how they keep it.

Every Function here keeps its state through ``ctx.save_for_backward`` only
(packed codes, scales, bit masks, seeds as 0-dim tensors), never as loose
``ctx`` attributes holding tensors. So ``torch.autograd.graph.saved_tensors_hooks``
sees every byte, and :func:`iexact.activation_memory` can tell compressed
storage (saved by a :class:`SavingFunction`) from anything else autograd keeps.
"""

from __future__ import annotations

import contextvars
from collections.abc import Container

import torch

from ..config import CompressionConfig
from ..graph import storages
from ..ops import codec as codec_ops
from ..ops.codec import Stored
from ..seeds import SeedStream


class SavingFunction(torch.autograd.Function):
    """Base class of the Functions whose saved tensors are compressed storage
    (or references to tensors the model already holds: parameters, inputs)."""


INTERMEDIATE = "iexact_intermediate"  # the attribute :func:`mark_intermediate` sets

CALLER_HELD: contextvars.ContextVar[Container | None] = contextvars.ContextVar("iexact_caller_held", default=None)
"""The storage keys (:func:`iexact.graph.storages`) of what the caller holds:
during a converted model's forward, its inputs, parameters and buffers
(:mod:`iexact.nn.held`); inside a module under the saved-tensor fallback
(:mod:`iexact.nn.fallback`), those of them it reads, and its own parameters
and buffers. A leaf made in between (GPSConv's ``to_dense_batch`` of
``data.x``, an ``E x 2F`` concatenation of edge features made without a
gradient) is no caller's, so :func:`pack` compresses it; ``None`` outside
any of these (a converted module called on its own)."""


def mark_intermediate(x: torch.Tensor) -> torch.Tensor:
    """Mark ``x``, a tensor a handler computed, as one no caller holds, so
    that :func:`pack` never keeps it by reference: made from inputs that need
    no gradient (GIN's aggregation of ``data.x``), it has no ``grad_fn`` and
    would look like the caller's own leaf. Returns ``x``."""
    setattr(x, INTERMEDIATE, True)
    return x


def keep_mark(source: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """Mark ``view`` (a reshape or movedim of ``source``: a new tensor object)
    as :func:`mark_intermediate` marked ``source``, if it did. Returns ``view``."""
    return mark_intermediate(view) if getattr(source, INTERMEDIATE, False) else view


def pack(
    x: torch.Tensor, config: CompressionConfig, seeds: SeedStream | None, argument: bool = False
) -> Stored | torch.Tensor:
    """What backward keeps of ``x``: ``x`` itself when it is an ``argument`` of
    the Function that is a leaf the caller holds anyway (an input such as
    ``data.x``: no op of the graph made it, so a reference costs no bytes and
    adds no noise; not one a handler marked with :func:`mark_intermediate`,
    nor one made during the model's forward, :data:`CALLER_HELD`)
    and ``config.reference_inputs``; otherwise ``x`` compressed, seeded from
    ``seeds`` (torch's global generator when ``None``). (Inside a Function's
    forward every tensor it computes looks like a leaf: only its arguments may
    be referenced.)"""
    if argument and config.reference_inputs and x.is_leaf and not getattr(x, INTERMEDIATE, False) and _held(x):
        return x
    return codec_ops.compress(x.detach(), config, None if seeds is None else seeds.state)


def pack_source_and_root(
    source: torch.Tensor,
    root: torch.Tensor | None,
    weight: torch.Tensor,
    weight_root: torch.Tensor | None,
    config: CompressionConfig,
    seeds: SeedStream | None,
) -> tuple[Stored | torch.Tensor | None, Stored | torch.Tensor | None]:
    r"""What a layer :math:`Y = \mathrm{agg}(X_s) W + X_t W_0` keeps for its
    weight gradients (:func:`pack` of each, or ``None``): :math:`X_s` when
    :math:`W` needs a gradient, or when :math:`W_0` does and ``root`` is
    ``None`` (:math:`X_t` is :math:`X_s`, stored once); :math:`X_t` when it
    is another tensor and :math:`W_0` needs a gradient."""
    root_grad = weight_root is not None and weight_root.requires_grad
    keep_source = weight.requires_grad or (root is None and root_grad)
    packed_source = pack(source, config, seeds, argument=True) if keep_source else None
    packed_root = pack(root, config, seeds, argument=True) if root is not None and root_grad else None
    return packed_source, packed_root


def _held(x: torch.Tensor) -> bool:
    """Whether the caller holds the leaf ``x`` (see :data:`CALLER_HELD`): always outside a converted
    model's forward, and in a compiled graph (Dynamo cannot read a ContextVar: a compiled model keeps its
    leaf arguments by reference, as before)."""
    if torch.compiler.is_compiling():
        return True
    held = CALLER_HELD.get()
    return held is None or all(key in held for key, _ in storages(x))


def unpack(stored: Stored | torch.Tensor) -> torch.Tensor:
    """The tensor :func:`pack` kept, decompressed if it was compressed."""
    return codec_ops.decompress(stored) if isinstance(stored, Stored) else stored.detach()


def products(stored: Stored | torch.Tensor, *lefts: torch.Tensor) -> list[torch.Tensor]:
    r""":math:`A_j^\top X` for what :func:`pack` kept of :math:`X` (see
    :func:`iexact.codec.transpose_products`), float32 :math:`(F_j, D)`."""
    if isinstance(stored, Stored):
        return codec_ops.transpose_products(stored, *lefts)
    rows = stored.detach().reshape(-1, stored.shape[-1]).float()
    return [left.float().t() @ rows for left in lefts]


def save(ctx, *items) -> None:
    """Save tensors, :class:`~iexact.ops.codec.Stored` records and ``None`` for backward."""
    tensors: list[torch.Tensor] = []
    layout: list[tuple[int, Stored | None]] = []
    for item in items:
        if isinstance(item, Stored):
            held = item.tensors
            layout.append((len(held), item._replace(tensors=())))
        else:
            held = () if item is None else (item,)
            layout.append((len(held), None))
        tensors.extend(held)
    ctx.save_for_backward(*tensors)
    ctx.iexact_layout = layout


def load(ctx) -> list:
    """What :func:`save` saved, in order, rebuilt."""
    tensors, items, position = ctx.saved_tensors, [], 0
    for count, layout in ctx.iexact_layout:
        held = tensors[position : position + count]
        position += count
        if layout is not None:
            items.append(layout._replace(tensors=tuple(held)))
        else:
            items.append(held[0] if count else None)
    return items
