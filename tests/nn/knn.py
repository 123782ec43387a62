"""A stand-in for pyg-lib's ``pyg::knn`` where pyg-lib is not installed (it has no wheel for this torch), so
that PyG's ``DynamicEdgeConv``, which calls it, runs in the tests: brute-force nearest neighbours, the same
output (each ``y`` row's ``k`` nearest ``x`` rows within its graph, as ``(2, k |y|)`` rows ``[y index, x index]``)."""

import contextlib
from unittest import mock

import torch
import torch_geometric


@torch.no_grad()  # pyg-lib's kernel records nothing for autograd: its output is an index
def _knn(x, y, ptr_x, ptr_y, k, cosine, num_threads):
    distance = torch.cdist(y.double(), x.double())
    if ptr_x is not None and ptr_y is not None:
        graph_x = torch.repeat_interleave(torch.arange(ptr_x.numel() - 1), ptr_x.diff())
        graph_y = torch.repeat_interleave(torch.arange(ptr_y.numel() - 1), ptr_y.diff())
        distance[graph_y[:, None] != graph_x[None, :]] = float("inf")
    nearest = distance.topk(min(k, x.shape[0]), dim=1, largest=False).indices
    rows = torch.arange(y.shape[0]).repeat_interleave(nearest.shape[1])
    return torch.stack([rows, nearest.flatten()])


def _stand_in() -> torch.library.Library | None:
    try:
        torch.ops.pyg.knn  # noqa: B018
        return None
    except (AttributeError, RuntimeError):
        library = torch.library.Library("pyg", "FRAGMENT")
        library.define(
            "knn(Tensor x, Tensor y, Tensor? ptr_x, Tensor? ptr_y, int k, bool cosine, int num_threads) -> Tensor"
        )
        library.impl("knn", _knn, "CompositeExplicitAutograd")
        return library


_LIBRARY = _stand_in()  # held: the op lives as long as its library


@contextlib.contextmanager
def knn_available():
    """The block constructs ``DynamicEdgeConv`` (which checks for pyg-lib's ``knn`` on construction)."""
    with mock.patch.object(torch_geometric.typing, "WITH_KNN", True):
        yield
