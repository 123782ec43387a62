r"""What the multi-head attention convs share: their inputs' check, and heads split and merged."""

from __future__ import annotations

import torch

from ..autograd import mark_intermediate


def matrices_reason(x, target_optional: bool = False) -> str | None:
    """Why ``x`` is not one :math:`(N, F)` matrix nor a pair ``(x_source, x_target)`` of
    them (``x_target`` may be ``None`` with ``target_optional``), or ``None``."""
    pair = isinstance(x, (tuple, list))
    if pair and (len(x) != 2 or x[0] is None or (x[1] is None and not target_optional)):
        return f"the input pair is not (x_source, x_target{' or None' if target_optional else ''})"
    sides = [side for side in (x if pair else (x,)) if side is not None]
    if not all(isinstance(side, torch.Tensor) and side.dim() == 2 for side in sides):
        return "the input is not one or two (N, F) matrices"
    return None


def split_heads(features: torch.Tensor | None, heads: int, channels: int) -> torch.Tensor | None:
    """``features`` :math:`(N, H C)` as :math:`(N, H, C)`, marked as no caller's
    (:func:`~iexact.autograd.mark_intermediate`: a conv made them), or ``None``."""
    return None if features is None else mark_intermediate(features.view(-1, heads, channels))


def merged_heads(out: torch.Tensor, concat: bool) -> torch.Tensor:
    """:math:`(N, H, C)` heads as PyG's attention convs merge them: concatenated, or their mean."""
    return out.flatten(1) if concat else out.mean(dim=1)


def attention_output(
    out: torch.Tensor, concat: bool, residual: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    """GATConv's and GATv2Conv's output: the heads merged (:func:`merged_heads`),
    plus the residual map's output and the bias, where the conv has them."""
    out = merged_heads(out, concat)
    if residual is not None:
        out = out + residual
    return out if bias is None else out + bias
