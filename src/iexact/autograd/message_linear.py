r"""PNA's message: each tower's first linear map of ``[x_i, x_j, e_ij]``, keeping the node features."""

from __future__ import annotations

import dataclasses
from typing import cast

import torch

from ..config import CompressionConfig
from ..seeds import SeedStream
from .saving import SavingFunction, load, pack, products, save


@dataclasses.dataclass(frozen=True)
class TowerSpec:
    """How :class:`TowerMessageLinearFunction` reads its nodes: ``towers``
    maps; ``divided`` when each reads its own ``width`` columns of the nodes
    (PNA's ``divide_input``), else all read all of them."""

    towers: int
    width: int
    divided: bool


class TowerMessageLinearFunction(SavingFunction):
    r""":math:`Y^{(t)}_e = [X^{(t)}_{d(e)} \,\Vert\, X^{(t)}_{s(e)} \,\Vert\, A_e]\, W_t^\top + b_t`
    for each edge :math:`e: s \to d` and tower :math:`t` (``PNAConv``'s
    message through each tower's first linear map, computed as PyG computes
    it: the nodes repeated or split into towers, gathered, concatenated with
    the edge features :math:`A`, sliced per tower), keeping the node features
    once instead of the :math:`E \times T \times 3F` concatenation.

    The input is linear in the node and edge features, so is each weight
    gradient: with :math:`W_t = [W_{t,d} \; W_{t,s} \; W_{t,a}]`,
    :math:`G^d_t = \sum_{e \to d} dY^{(t)}_e` and :math:`G^s_t` the sums of
    :math:`dY^{(t)}` to each edge's target and source,

    .. math::
        dW_{t,d} = {G^d_t}^\top \hat X^{(t)}, \quad dW_{t,s} = {G^s_t}^\top \hat X^{(t)}, \quad
        dW_{t,a} = {dY^{(t)}}^\top \hat A, \quad dX^{(t)} = G^d_t W_{t,d} + G^s_t W_{t,s}, \quad
        dA = \textstyle\sum_t dY^{(t)} W_{t,a},

    unbiased as :class:`~iexact.autograd.CompressedLinearFunction`'s. The
    input gradients are summed as PyG's backward sums them (each edge's
    :math:`dh`, then scattered to the nodes), so that under bf16 autocast
    they round as the stock conv's do.

    Stores: :math:`X` compressed once for all towers (or referenced, a
    caller's input) with ``node_config``; :math:`A` compressed once with
    ``config``; the edge indices and the weights by reference.

    Shapes:
        - **input:** :math:`X` :math:`(N, F)` (:math:`(N, TF)` divided),
          :math:`A` :math:`(E, F)` or ``None``, ``src``, ``dst`` :math:`(E,)`,
          per tower :math:`W_t` :math:`(H, 3F)` (:math:`(H, 2F)` without
          :math:`A`) and :math:`b_t` :math:`(H,)` or ``None``
        - **output:** one :math:`(E, H)` per tower
    """

    @staticmethod
    def forward(
        ctx,
        nodes: torch.Tensor,
        edges: torch.Tensor | None,
        src: torch.Tensor,
        dst: torch.Tensor,
        spec: TowerSpec,
        node_config: CompressionConfig,
        config: CompressionConfig,
        seeds: SeedStream | None,
        *parameters: torch.Tensor | None,
    ):
        weights, biases = cast(tuple[torch.Tensor, ...], parameters[0::2]), parameters[1::2]
        outs, ctx.dtype = _tower_outputs(nodes, edges, src, dst, spec, weights, biases)
        needed = any(weight.requires_grad for weight in weights)
        on_nodes = pack(nodes, node_config, seeds, argument=True) if needed else None
        on_edges = pack(edges, config, seeds, argument=True) if needed and edges is not None else None
        save(ctx, src, dst, on_nodes, on_edges, *weights)
        ctx.spec, ctx.num_nodes = spec, nodes.shape[0]
        ctx.edge_dtype = None if edges is None else edges.dtype
        ctx.has_bias = [bias is not None for bias in biases]
        return outs

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        src, dst, on_nodes, on_edges, *weights = load(ctx)
        spec = ctx.spec
        wants_inputs = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        rows = ctx.num_nodes if wants_inputs else 0  # the sums of dh per node, empty when not needed
        shape = (rows, spec.towers, spec.width)
        on_targets = torch.zeros(shape, dtype=ctx.dtype, device=grads[0].device)
        on_sources, on_edge_features = torch.zeros_like(on_targets), []
        grad_parameters: list[torch.Tensor | None] = []
        for t, (grad, weight) in enumerate(zip(grads, weights, strict=True)):
            if wants_inputs:  # dh as PyG's backward makes it (its order of sums), in h's dtype
                target, source, *edge = (grad @ weight.to(grad.dtype)).to(ctx.dtype).split(spec.width, dim=1)
                on_targets[:, t].index_add_(0, dst, target)
                on_sources[:, t].index_add_(0, src, source)
                on_edge_features += edge
            grad_parameters.append(_weight_grad(ctx, t, grad, src, dst, on_nodes, on_edges, weight))
            grad_parameters.append(grad.sum(0) if ctx.has_bias[t] and ctx.needs_input_grad[9 + 2 * t] else None)
        grad_x = grad_edges = None
        if ctx.needs_input_grad[0]:
            on_nodes_total = on_targets.add_(on_sources)
            grad_x = on_nodes_total.view(ctx.num_nodes, -1) if spec.divided else on_nodes_total.sum(1)
        if ctx.needs_input_grad[1] and on_edge_features:
            grad_edges = torch.stack(on_edge_features, dim=1).to(ctx.edge_dtype).sum(1)
        return grad_x, grad_edges, None, None, None, None, None, None, *grad_parameters


def _tower_outputs(nodes, edges, src, dst, spec: TowerSpec, weights, biases) -> tuple[tuple, torch.dtype]:
    """Each tower's map of its message, as PyG's ``PNAConv`` computes it, and the
    dtype of the concatenation (its temporaries freed on return)."""
    towers, width = spec.towers, spec.width
    split = nodes.view(-1, towers, width) if spec.divided else nodes.view(-1, 1, width).repeat(1, towers, 1)
    parts = [split.index_select(0, dst), split.index_select(0, src)]
    if edges is not None:
        parts.append(edges.view(-1, 1, width).repeat(1, towers, 1))
    h = torch.cat(parts, dim=-1)
    return tuple(torch.nn.functional.linear(h[:, t], weights[t], biases[t]) for t in range(towers)), h.dtype


def _weight_grad(ctx, t, grad, src, dst, on_nodes, on_edges, weight) -> torch.Tensor | None:
    r""":math:`dW_t = [{G^d_t}^\top \hat X^{(t)} \; {G^s_t}^\top \hat X^{(t)} \; {dY^{(t)}}^\top \hat A]`
    (the node products over all the nodes' columns, this tower's kept when divided; the sums
    :math:`G` in float32)."""
    if not ctx.needs_input_grad[8 + 2 * t] or on_nodes is None:
        return None
    spec, rows = ctx.spec, grad.float()
    to_targets = rows.new_zeros(ctx.num_nodes, rows.shape[1]).index_add_(0, dst, rows)
    to_sources = rows.new_zeros(ctx.num_nodes, rows.shape[1]).index_add_(0, src, rows)
    blocks = products(on_nodes, to_targets, to_sources)
    if spec.divided:
        blocks = [block[:, t * spec.width : (t + 1) * spec.width] for block in blocks]
    if on_edges is not None:
        blocks += products(on_edges, grad)
    return torch.cat(blocks, dim=1).to(weight.dtype)
