r"""DeeperGCN's message normalization keeping the unit messages compressed twice."""

from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, save, unpack

EPS = 1e-12  # torch.nn.functional.normalize's


class MessageNormFunction(SavingFunction):
    r""":math:`Y_i = s\, \lVert X_i \rVert \, U_i` with :math:`U_i = M_i / \max(\lVert M_i \rVert, \epsilon)`
    (PyG's ``MessageNorm`` with :math:`p = 2`, computed as PyG computes it).

    Backward, with :math:`V_i = X_i / \lVert X_i \rVert` and :math:`a_i = s \lVert X_i \rVert`:

    .. math::
        dM_i = \frac{a_i\, dY_i - U_i\, (U_i \cdot a_i\, dY_i)}{\lVert M_i \rVert}, \quad
        dX_i = s\, (U_i \cdot dY_i)\, V_i, \quad ds = \textstyle\sum_i \lVert X_i \rVert\, (U_i \cdot dY_i)

    (:math:`dM_i = a_i\, dY_i / \epsilon` where :math:`\lVert M_i \rVert \le \epsilon`).

    **Unbiased.** :math:`dM` multiplies :math:`U` by a product with
    :math:`U`: the two factors come from two independent compressions of
    :math:`U` (one would add its variance to every element, as for
    :class:`~iexact.autograd.CompressedLayerNormFunction`); :math:`dX`
    multiplies :math:`\hat U` by :math:`\hat V`, compressed independently;
    :math:`ds` is linear in :math:`\hat U`. The norms are kept exact.

    Stores: :math:`U` compressed twice (once when :math:`M` needs no
    gradient), :math:`V` compressed when :math:`X` needs a gradient (never
    projected), and both norms, :math:`8` bytes per row.

    Shapes:
        - **input:** :math:`X` :math:`(*, C_x)`, :math:`M` :math:`(*, C)`, :math:`s` :math:`(1,)`
        - **output:** :math:`(*, C)`
    """

    @staticmethod
    def forward(ctx, x, msg, scale, config: CompressionConfig, seeds: SeedStream | None):
        out = torch.nn.functional.normalize(msg, p=2.0, dim=-1) * x.norm(p=2.0, dim=-1, keepdim=True) * scale
        rows = msg.detach().reshape(-1, msg.shape[-1]).float()
        features = x.detach().reshape(-1, x.shape[-1]).float()
        msg_norm, x_norm = rows.norm(dim=1, keepdim=True), features.norm(dim=1, keepdim=True)
        unit = rows / msg_norm.clamp_min(EPS)
        elementwise = config.unprojected
        wants_x, wants_msg = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        second = pack(unit, elementwise, seeds) if wants_msg else None
        unit_x = None
        if wants_x:
            unit_features = features / x_norm.clamp_min(torch.finfo(torch.float32).tiny)  # a zero row stays 0
            unit_x = pack(unit_features, elementwise, seeds)
        save(ctx, scale, pack(unit, elementwise, seeds), second, unit_x, msg_norm, x_norm)
        ctx.shapes = (x.shape, msg.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        scale, first, second, unit_x, msg_norm, x_norm = load(ctx)
        x_shape, msg_shape = ctx.shapes
        grad = grad_out.reshape(-1, msg_shape[-1]).float()
        unit = unpack(first).float()
        along = (unit * grad).sum(1, keepdim=True)  # U . dY per row
        scale32 = scale.detach().float()
        grad_x = grad_msg = grad_scale = None
        if unit_x is not None:
            grad_x = (unpack(unit_x).float() * (along * scale32)).view(x_shape)
        if second is not None:
            scaled = grad * (x_norm * scale32)
            projected = scaled - unit * (unpack(second).float() * scaled).sum(1, keepdim=True)
            grad_msg = torch.where(msg_norm > EPS, projected / msg_norm, scaled / EPS).view(msg_shape)
        if ctx.needs_input_grad[2]:
            grad_scale = (along * x_norm).sum().view(1)
        return grad_x, grad_msg, grad_scale, None, None
