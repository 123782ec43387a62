"""A normalization shared by the Functions of one forward: computed by the first reader of the forward
and of each backward, held from the first to the last reader of a backward, never between the two."""

import torch

from iexact.autograd.shared_graphs import (
    SHARED_GRAPHS,
    SharedGraph,
    close_shared_graphs,
    open_shared_graphs,
    shared_graph,
)


class Counted:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return (torch.zeros(2, 3), torch.ones(3))


def test_three_readers_compute_once_in_forward_and_once_per_backward():
    shared, compute = SharedGraph(), Counted()
    first = shared.in_forward(compute)
    assert all(shared.in_forward(compute) is first for _ in range(2)) and compute.calls == 1
    shared.forward_ended()
    assert shared.value is None  # nothing held between forward and backward
    for backward in (1, 2):  # a retained graph's second backward starts again
        values = [shared.in_backward(compute) for _ in range(3)]
        assert values[0] is values[1] is values[2] and compute.calls == 1 + backward
        assert shared.value is None  # dropped by the last reader


def test_a_graph_is_known_by_its_tensors_and_their_version_within_one_forward():
    index, other = torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)
    assert shared_graph(("key",), index, None) is None  # outside a forward
    token = open_shared_graphs()
    assert token is not None and open_shared_graphs() is None  # an inner model leaves it to the outer one
    first = shared_graph(("key",), index, None)
    assert first is shared_graph(("key",), index, None)
    assert first is not shared_graph(("key",), other, None)  # equal values, another tensor
    assert first is not shared_graph(("other key",), index, None)
    index.add_(1)  # changed in place: another graph
    assert first is not shared_graph(("key",), index, None)
    first.in_forward(Counted())
    close_shared_graphs(token)
    assert SHARED_GRAPHS.get() is None and first.value is None
