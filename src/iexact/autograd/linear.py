r"""Linear layer whose saved input is compressed."""

from __future__ import annotations

import torch

from ..config import CompressionConfig
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, products, save


class CompressedLinearFunction(SavingFunction):
    r""":math:`Y = X W^\top + b`, keeping :math:`X` compressed for :math:`dW`.

    Backward:

    .. math::
        dX = dY\,W, \qquad dW = dY^\top \hat X, \qquad db = \textstyle\sum_{\text{rows}} dY,

    with :math:`dY^\top \hat X` from :func:`iexact.codec.transpose_products`
    (for the shared projection :math:`(dY^\top \hat Z) P^\top`, never the
    full-width :math:`\hat X`; for the row-wise kinds a sum over chunks of rows).
    :math:`\mathbb{E}[dW]` equals the exact gradient because :math:`\hat X` is
    unbiased and enters linearly. An :math:`X` that is the caller's own leaf
    tensor is kept by reference instead (``config.reference_inputs``).

    Stores: the :class:`~iexact.quant.PackedActivation` of :math:`X`
    (:math:`\lceil N k b/8 \rceil` bytes plus scales), nothing when :math:`W`
    needs no gradient.

    Shapes:
        - **input:** :math:`X` :math:`(*, D)`, :math:`W` :math:`(F, D)`,
          :math:`b` :math:`(F,)` or ``None``
        - **output:** :math:`(*, F)`
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        config: CompressionConfig,
        seeds: SeedStream | None,
    ) -> torch.Tensor:
        save(ctx, weight, pack(x, config, seeds, argument=True) if weight.requires_grad else None)
        ctx.input_shape = x.shape
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        weight, packed = load(ctx)
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_rows @ weight.to(grad_rows.dtype)).view(ctx.input_shape)
        if ctx.needs_input_grad[1] and packed is not None:
            grad_w = products(packed, grad_rows)[0].to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(0)
        return grad_x, grad_w, grad_b, None, None


class SharedInputLinearFunction(SavingFunction):
    r""":math:`Y_j = X W_j^\top` for several weights, keeping :math:`X` compressed once.

    A tensor read by two linear maps (SAGE's input: :math:`A X W_l^\top` via
    :math:`A (X W_l^\top)`, and :math:`X W_r^\top`) is stored once:

    .. math::
        dX = \textstyle\sum_j dY_j W_j, \qquad dW_j = (dY_j^\top \hat Z) P^\top.

    Stores: one :class:`~iexact.quant.PackedActivation` of :math:`X`.

    Shapes:
        - **input:** :math:`X` :math:`(N, D)`, each :math:`W_j` :math:`(F_j, D)`
        - **output:** one :math:`(N, F_j)` per weight
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, config: CompressionConfig, seeds: SeedStream | None, *weights: torch.Tensor):
        needed = any(w.requires_grad for w in weights)
        save(ctx, pack(x, config, seeds, argument=True) if needed else None, *weights)
        return tuple(torch.nn.functional.linear(x, w) for w in weights)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        packed, *weights = load(ctx)
        grad_x = None
        if ctx.needs_input_grad[0]:
            rows = [g.reshape(-1, g.shape[-1]) for g in grads]
            grad_x = rows[0] @ weights[0].to(rows[0].dtype)
            for g, w in zip(rows[1:], weights[1:], strict=True):
                grad_x.addmm_(g, w.to(g.dtype))  # in place: one (N, D) buffer for the sum
            grad_x = grad_x.view(*grads[0].shape[:-1], grad_x.shape[-1])
        wanted = [j for j in range(len(weights)) if ctx.needs_input_grad[3 + j]]
        grad_ws: list[torch.Tensor | None] = [None] * len(weights)
        if packed is not None and wanted:
            wanted_products = products(packed, *(grads[j].reshape(-1, grads[j].shape[-1]) for j in wanted))
            for j, product in zip(wanted, wanted_products, strict=True):
                grad_ws[j] = product.to(weights[j].dtype)
        return (grad_x, None, None, *grad_ws)


class EdgePairLinearFunction(SavingFunction):
    r""":math:`Y_e = [X_{t(e)} \,\Vert\, X_{s(e)} - X_{t(e)}] W^\top + b` for each
    edge :math:`e: s \to t` (EdgeConv's message through its first linear map,
    computed as PyG computes it), keeping the node features, not the
    :math:`E \times 2F` input.

    The input is linear in the node features, so is the weight gradient:
    with :math:`W = [W_a \; W_b]`, :math:`G_t = \sum_{e \to t} dY_e` and
    :math:`G_s = \sum_{e: s \to} dY_e` (scatter sums of :math:`dY` to the
    targets and the sources),

    .. math::
        dW_a = G_t^\top \hat X_t, \quad dW_b = G_s^\top \hat X_s - G_t^\top \hat X_t, \quad
        dX_t = G_t (W_a - W_b), \quad dX_s = G_s W_b, \quad db = \textstyle\sum_e dY_e,

    unbiased as :class:`CompressedLinearFunction`'s, from :math:`\hat X`
    compressed once per side (once when both sides are one tensor, passed as
    ``source`` with ``target`` ``None``).

    Stores: each side's :math:`X` compressed (or referenced, a caller's input);
    the edge indices and the weight by reference.

    Shapes:
        - **input:** :math:`X_s` :math:`(N_s, F)`, :math:`X_t` :math:`(N_t, F)` or ``None`` (:math:`X_s`),
          ``src``, ``dst`` :math:`(E,)`, :math:`W` :math:`(H, 2F)`, :math:`b` :math:`(H,)` or ``None``
        - **output:** :math:`(E, H)`
    """

    @staticmethod
    def forward(ctx, source, target, src, dst, weight, bias, config: CompressionConfig, seeds: SeedStream | None):
        shared = target is None  # one tensor for both sides (never passed twice: Dynamo traces no duplicate input)
        target = source if target is None else target
        x_i, x_j = target.index_select(0, dst), source.index_select(0, src)
        out = torch.nn.functional.linear(torch.cat([x_i, x_j - x_i], dim=-1), weight, bias)
        del x_i, x_j
        needed = weight.requires_grad
        on_target = pack(target, config, seeds, argument=True) if needed else None
        on_source = pack(source, config, seeds, argument=True) if needed and not shared else None
        save(ctx, src, dst, weight, on_target, on_source)
        ctx.shared, ctx.has_bias, ctx.sizes = shared, bias is not None, (source.shape[0], target.shape[0])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        src, dst, weight, on_target, on_source = load(ctx)
        num_src, num_dst = ctx.sizes
        to_targets = grad_out.new_zeros(num_dst, grad_out.shape[1]).index_add_(0, dst, grad_out)
        to_sources = grad_out.new_zeros(num_src, grad_out.shape[1]).index_add_(0, src, grad_out)
        on_root, on_neighbour = weight.to(grad_out.dtype).chunk(2, dim=1)
        grad_target = to_targets @ (on_root - on_neighbour) if ctx.needs_input_grad[1] or ctx.shared else None
        grad_source = to_sources @ on_neighbour if ctx.needs_input_grad[0] else None
        if ctx.shared:
            grad_source, grad_target = (None if grad_source is None else grad_source.add_(grad_target)), None
        grad_w = None
        if ctx.needs_input_grad[4] and on_target is not None:
            if ctx.shared:
                a, b = products(on_target, to_targets, to_sources)
            else:
                (a,), (b,) = products(on_target, to_targets), products(on_source, to_sources)
            grad_w = torch.cat([a, b - a], dim=1).to(weight.dtype)
        grad_b = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[5] else None
        return grad_source, grad_target, None, None, grad_w, grad_b, None, None
