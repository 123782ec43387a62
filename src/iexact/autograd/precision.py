r"""The dtypes under ``torch.autocast``: where a handler writes an op the stock
module leaves to autocast or to type promotion, these give it the stock
module's dtype.

Under autocast a linear map returns the autocast dtype (bf16, fp16) with its
bias cast to it, while adding a float32 parameter to a bf16 tensor promotes
the sum to float32 (``GCNConv``'s ``out + bias``). In-place ops
(``index_add_``, ``addmm_``) neither cast nor promote, so a handler that
accumulates in place names the dtype first.
"""

from __future__ import annotations

import torch


def plus_linear_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    r""":math:`y + b` as ``torch.nn.functional.linear`` adds its bias: in
    :math:`y`'s dtype (under autocast the bias is cast to it)."""
    return y if bias is None else y + bias.to(y.dtype)


def plus_parameter(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    r""":math:`out + b` as a module adds its own parameter (``out + self.bias``):
    by type promotion, so a bf16 ``out`` under autocast plus a float32 bias is
    float32. In place when that keeps ``out``'s dtype (``out`` must be the
    caller's own buffer)."""
    if bias is None:
        return out
    return out.add_(bias) if torch.promote_types(out.dtype, bias.dtype) == out.dtype else out + bias


def matmul_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """The dtype of ``a @ b`` here: autocast's on ``a``'s device when it is
    on (it leaves float64 alone), otherwise the promoted dtype."""
    device, promoted = a.device.type, torch.promote_types(a.dtype, b.dtype)
    if promoted != torch.float64 and torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return promoted
