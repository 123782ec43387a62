r"""What iexact's autograd Functions keep, and how they keep it.

Every Function here keeps its state through ``ctx.save_for_backward`` only
(packed codes, scales, bit masks, seeds as 0-dim tensors), never as loose
``ctx`` attributes holding tensors. So ``torch.autograd.graph.saved_tensors_hooks``
sees every byte, and :func:`iexact.activation_memory` can tell compressed
storage (saved by a :class:`SavingFunction`) from anything else autograd keeps.
"""
from __future__ import annotations

import torch

from ..codec import compress
from ..config import CompressionConfig
from ..quant import PackedActivation
from ..seeds import SeedStream


class SavingFunction(torch.autograd.Function):
    """Base class of the Functions whose saved tensors are compressed storage
    (or references to tensors the model already holds: parameters, inputs)."""


def pack(x: torch.Tensor, config: CompressionConfig, seeds: SeedStream | None) -> PackedActivation:
    """``x`` compressed for backward (detached), seeded from ``seeds`` (torch's
    global generator when ``None``)."""
    return compress(x.detach(), config, None if seeds is None else seeds.draw())


def save(ctx, *items) -> None:
    """Save tensors, :class:`PackedActivation` objects and ``None`` for backward."""
    tensors, layout = [], []
    for item in items:
        if isinstance(item, PackedActivation):
            held = item.tensors()
            layout.append((len(held), item.layout()))
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
            items.append(PackedActivation.from_tensors(held, layout))
        else:
            items.append(held[0] if count else None)
    return items
