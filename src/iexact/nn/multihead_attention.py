r"""``torch.nn.MultiheadAttention`` keeping compressed inputs, queries, keys, values and attention weights."""

from __future__ import annotations

import warnings
from typing import cast

import torch

from ..autograd import CompressedLinearFunction, DenseAttentionFunction, SharedInputLinearFunction, mark_intermediate
from ..autograd.precision import plus_linear_bias
from .handler import CompressedModule, has_forward_hooks, register_handler


def _mask_reason(mask, name: str, shapes: tuple[tuple[int, ...], ...]) -> str | None:
    """Why ``mask`` is not ``None`` nor a bool or floating tensor of one of ``shapes`` without gradient."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.is_nested or tuple(mask.shape) not in shapes:
        return f"{name} is not a tensor of shape {' or '.join(str(shape) for shape in shapes)}"
    if mask.dtype != torch.bool and not mask.is_floating_point():
        return f"{name} is neither bool nor floating"
    if mask.requires_grad:
        return f"{name} requires a gradient"
    return None


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A bool mask (``True``: not attended) as ``-inf`` and ``0``; a floating one as it is."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


@register_handler(torch.nn.MultiheadAttention)
class MultiheadAttentionHandler(CompressedModule):
    r""":math:`\mathrm{MHA}(Q, K, V) = [\mathrm{head}_1, \dots, \mathrm{head}_H] W_O^\top + b_O`, with
    :math:`\mathrm{head}_h = \mathrm{softmax}\big(Q W_{Q,h}^\top (K W_{K,h}^\top)^\top / \sqrt{C} + M\big)
    V W_{V,h}^\top`,
    as ``torch.nn.MultiheadAttention`` computes it (GPSConv's global attention),
    the attention through :class:`~iexact.autograd.DenseAttentionFunction` and the
    input and output maps through compressed linear maps: one compressed
    input for every map that reads it (self-attention: one for all three).

    Inputs as the module takes them: batched :math:`(B, L, E)` with
    ``batch_first`` or :math:`(L, B, E)`, or unbatched :math:`(L, E)`; separate
    ``kdim``/``vdim``; ``key_padding_mask`` and ``attn_mask`` bool or
    additive; ``is_causal``; ``need_weights`` (the weights after dropout,
    averaged over heads or not, differentiable); ``add_bias_kv``'s learned
    key and value and ``add_zero_attn``'s zero ones, appended after the input
    maps as torch appends them. Nested tensors and masks that need a
    gradient take the module's own forward (named in a warning).

    Stores: each distinct input compressed once (unprojected unless
    ``rp_edge_convs``), the values once, and the queries and keys once with the
    attention weights twice, or, where that is fewer bytes (long sequences), the
    queries and keys exact (:class:`~iexact.autograd.DenseAttentionFunction`);
    the heads' output compressed once (for :math:`W_O`).
    """

    @staticmethod
    def owned(attention) -> list[torch.nn.Module]:
        return [attention.out_proj]

    def _stock_reason(self, query, key, value, key_padding_mask, attn_mask, is_causal) -> str | None:
        """Why this call takes the module's own forward (which raises torch's errors for malformed input)."""
        tensors = (query, key, value)
        if not all(isinstance(t, torch.Tensor) and not t.is_nested and t.is_floating_point() for t in tensors):
            return "query, key and value are not all floating, non-nested tensors"
        if not query.dim() == key.dim() == value.dim() in (2, 3):
            return "query, key and value are not all 2-D (unbatched) or all 3-D (batched)"
        if (query.shape[-1], key.shape[-1], value.shape[-1]) != (self.embed_dim, self.kdim, self.vdim):
            return "the inputs' last dimensions are not embed_dim, kdim and vdim"
        if has_forward_hooks(cast(torch.nn.Module, self.out_proj)):  # computed here, not called
            return "forward hooks are registered on its out_proj"
        batched = query.dim() == 3
        padding: tuple[tuple[int, ...], ...]
        if batched:
            batch, sequence = (0, 1) if self.batch_first else (1, 0)
            length, source = query.shape[sequence], key.shape[sequence]
            if key.shape[batch] != query.shape[batch] or key.shape[:-1] != value.shape[:-1]:
                return "the inputs' batch and sequence dimensions do not match"
            padding, heads = ((query.shape[batch], source),), (query.shape[batch] * self.num_heads,)
        else:
            length, source = query.shape[0], key.shape[0]
            if key.shape[0] != value.shape[0]:
                return "the inputs' sequence dimensions do not match"
            padding, heads = ((source,),), (self.num_heads,)
        return (
            _mask_reason(key_padding_mask, "key_padding_mask", padding)
            or _mask_reason(attn_mask, "attn_mask", ((length, source), (*heads, length, source)))
            or ("is_causal=True without attn_mask" if is_causal and attn_mask is None else None)
        )

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        arguments = (query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
        if not self._compressing():
            return super().forward(*arguments)
        reason = self._stock_reason(query, key, value, key_padding_mask, attn_mask, is_causal)
        if reason is not None:
            warnings.warn(
                f"iexact: MultiheadAttention runs its own forward, uncompressed, because {reason}", stacklevel=2
            )
            return super().forward(*arguments)
        batched = query.dim() == 3
        q, k, v = self._in_projection((query, key, value), batched)
        k, v, added = self._added_keys(k, v)
        if is_causal and key_padding_mask is None and not need_weights:
            # torch then gives scaled_dot_product_attention is_causal=True in place of the mask (the added keys too)
            attn_mask, added = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).triu_(1), 0
        mask = self._mask(key_padding_mask, attn_mask, q.shape[0], query.dtype, added)
        out, weights = DenseAttentionFunction.apply(q, k, v, mask, self.dropout, self.iexact_config, self.iexact_seeds)
        out = mark_intermediate(out.transpose(1, 2).flatten(2))
        out = CompressedLinearFunction.apply(
            out, self.out_proj.weight, self.out_proj.bias, self.iexact_config.edge_conv_inputs, self.iexact_seeds
        )
        out = out.transpose(0, 1) if batched and not self.batch_first else out if batched else out.squeeze(0)
        if not need_weights:
            return out, None
        weights = weights.mean(dim=1) if average_attn_weights else weights
        return out, weights if batched else weights.squeeze(0)

    def _batch_major(self, x, batched):
        """``x`` as :math:`(B, L, F)`."""
        return x.transpose(0, 1) if batched and not self.batch_first else x if batched else x.unsqueeze(0)

    def _in_projection(self, inputs, batched):
        r"""Queries, keys and values :math:`(B, H, L, C)`, each distinct input compressed once for its maps."""
        embed = self.embed_dim
        if self._qkv_same_embed_dim:
            weights = self.in_proj_weight.split(embed)
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.split(embed)
        config, seeds = self.iexact_config.edge_conv_inputs, self.iexact_seeds
        groups: list[list[int]] = []  # the maps reading each distinct input
        for j, x in enumerate(inputs):
            group = next((group for group in groups if inputs[group[0]] is x), None)
            if group is None:
                groups.append([j])
            else:
                group.append(j)
        outputs: list = [None] * 3
        for group in groups:
            x = self._batch_major(inputs[group[0]], batched)
            if len(group) == 1:
                (j,) = group
                outputs[j] = CompressedLinearFunction.apply(x, weights[j], biases[j], config, seeds)
                continue
            made = SharedInputLinearFunction.apply(x, config, seeds, *(weights[j] for j in group))
            for j, y in zip(group, made, strict=True):
                outputs[j] = plus_linear_bias(y, biases[j])
        return [mark_intermediate(y.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)) for y in outputs]

    def _added_keys(self, k, v):
        r"""Keys and values :math:`(B, H, S, C)` with ``add_bias_kv``'s learned row and then
        ``add_zero_attn``'s zero row appended (as torch appends them), and how many rows were added."""
        added = 0
        if self.bias_k is not None and self.bias_v is not None:
            k, v = (
                torch.cat([t, bias.reshape(1, t.shape[1], 1, -1).to(t.dtype).expand(*t.shape[:2], 1, -1)], dim=2)
                for t, bias in ((k, self.bias_k), (v, self.bias_v))
            )
            added += 1
        if self.add_zero_attn:
            k, v = (torch.cat([t, t.new_zeros(*t.shape[:2], 1, t.shape[-1])], dim=2) for t in (k, v))
            added += 1
        return mark_intermediate(k), mark_intermediate(v), added

    def _mask(self, key_padding_mask, attn_mask, batch, dtype, added):
        r"""The additive mask :math:`M`, broadcastable to :math:`(B, H, L, S)`, or ``None``; a given
        mask is extended by ``added`` keys that every query attends (zero columns, as torch pads)."""
        padding, attention = (
            torch.nn.functional.pad(mask, (0, added)) if mask is not None and added else mask
            for mask in (_additive(key_padding_mask, dtype), _additive(attn_mask, dtype))
        )
        if attention is not None and attention.dim() == 3:
            attention = attention.view(batch, self.num_heads, *attention.shape[1:])
        if padding is None:
            return attention
        padding = padding.view(batch, 1, 1, -1)
        return padding if attention is None else attention + padding
