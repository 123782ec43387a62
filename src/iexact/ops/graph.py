r"""``iexact::gcn_norm``: PyG's ``gcn_norm`` of a ``(2, E)`` edge index as one
opaque operator, which a compressed backward recomputes (layouts may not be
inspected in a traced backward). Its self-loops are added without boolean
indexing (:func:`_padded_self_loops`: no host sync), as :math:`E + N` edges
whose replaced loops weigh 0, so its size is known before the data.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm


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
def gcn_norm(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    num_nodes: int,
    improved: bool,
    self_loops: bool,
    flow: str,
    dtype: torch.dtype,
) -> list[Tensor]:
    r"""PyG's ``gcn_norm`` of a plain ``(2, E)`` ``edge_index`` (not differentiable):
    ``[edge_index, weight]`` of :math:`\hat D^{-1/2} \hat A \hat D^{-1/2}`; with
    self-loops, :math:`E + N` edges (the graph's own loops kept with weight 0)."""
    if not self_loops:
        index, weight = pyg_gcn_norm(edge_index, edge_weight, num_nodes, improved, self_loops, flow, dtype)
        return [_fresh(index, edge_index), weight if edge_weight is None else _fresh(weight, edge_weight)]
    # as PyG: the added loops weigh 2 when improved only if the graph has edge weights
    fill = 2.0 if improved and edge_weight is not None else 1.0
    index, weight = _padded_self_loops(edge_index, edge_weight, num_nodes, fill, dtype)
    return list(pyg_gcn_norm(index, weight, num_nodes, improved, False, flow, dtype))


@gcn_norm.register_fake
def _(edge_index, edge_weight, num_nodes, improved, self_loops, flow, dtype):
    count = edge_index.shape[1] + (num_nodes if self_loops else 0)
    return [edge_index.new_empty(2, count), edge_index.new_empty(count, dtype=dtype)]
