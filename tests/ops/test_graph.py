"""``iexact::gcn_norm``: PyG's normalization without a host sync."""

import pytest
import torch


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("improved", [False, True])
@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
def test_gcn_norm_without_boolean_indexing_equals_pygs(weighted, improved, flow):
    """The padded normalization (the graph's loops kept at weight 0, one loop per
    node appended) is PyG's normalized adjacency, duplicate and weighted loops included."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm as pyg_gcn_norm

    from iexact.ops.graph import gcn_norm

    generator = torch.Generator().manual_seed(0)
    n = 30
    edge_index = torch.randint(0, n, (2, 200), generator=generator)
    edge_index[:, :5] = torch.tensor([[3, 3, 7, 7, 9], [3, 3, 7, 7, 9]])  # loops, two of them twice
    weight = torch.rand(200, generator=generator) if weighted else None

    def dense(index, values):
        return torch.zeros(n, n).index_put_((index[0], index[1]), values, accumulate=True)

    expected = dense(*pyg_gcn_norm(edge_index, weight, n, improved, True, flow, torch.float32))
    index, values = gcn_norm(edge_index, weight, n, improved, True, flow, torch.float32)
    assert index.shape == (2, 200 + n)
    torch.testing.assert_close(dense(index, values), expected, rtol=1e-6, atol=1e-7)
