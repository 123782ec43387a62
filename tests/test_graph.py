"""Graph inputs read once: every edge form gives the same product A X."""

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

from iexact import graph

NODES = 30


def _edge_index():
    """200 distinct edges (sparse layouts merge duplicates, which would change a mean)."""
    pairs = torch.randperm(NODES * NODES, generator=torch.Generator().manual_seed(0))[:200]
    return torch.stack([pairs // NODES, pairs % NODES])


def _dense(edge_index, weight, num_dst, reduce):
    adjacency = torch.zeros(num_dst, NODES, dtype=torch.float64)
    adjacency.index_put_((edge_index[1], edge_index[0]), weight.double(), accumulate=True)
    if reduce == "mean":
        adjacency /= torch.bincount(edge_index[1], minlength=num_dst).clamp(min=1).unsqueeze(1)
    return adjacency


@pytest.mark.parametrize("form", ["edge_index", "EdgeIndex", "coo", "csr", "csc"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_spmm_of_every_form_equals_the_dense_product(form, reduce):
    edge_index = _edge_index()
    weight = torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(1))
    structure, edge_weight = {
        "edge_index": (edge_index, weight),
        "EdgeIndex": (EdgeIndex(edge_index, sparse_size=(NODES, NODES)), weight),
        "coo": (to_torch_coo_tensor(edge_index.flip(0), weight, size=NODES), None),
        "csr": (to_torch_csr_tensor(edge_index.flip(0), weight, size=NODES), None),
        "csc": (to_torch_csc_tensor(edge_index.flip(0), weight, size=NODES), None),
    }[form]
    spec = graph.GraphSpec(NODES, NODES, reduce=reduce, sparse=form in ("coo", "csr", "csc"))
    edges = graph.edges(structure, edge_weight, spec, torch.float32)
    x = torch.randn(NODES, 5, dtype=torch.float64)
    dense = 0.5 * _dense(edge_index, weight, NODES, reduce)
    torch.testing.assert_close(graph.spmm(x, edges, graph.GraphSpec(NODES, NODES, reduce, scale=0.5)), dense @ x)
    torch.testing.assert_close(
        graph.spmm_adjoint(x, edges, graph.GraphSpec(NODES, NODES, reduce, scale=0.5)), dense.T @ x
    )


@pytest.mark.parametrize("layout", ["csr", "csc"])
def test_a_compressed_index_is_expanded_one_chunk_at_a_time(layout, monkeypatch):
    """The pointer side of a CSR/CSC adjacency is expanded per chunk, never
    whole: each chunk's expansion equals the slice of the whole one, and
    products in tiny chunks (cutting through rows) equal the dense ones."""
    edge_index = _edge_index()
    convert = to_torch_csr_tensor if layout == "csr" else to_torch_csc_tensor
    edges = graph.sparse_edges(convert(edge_index.flip(0), size=NODES))
    src, dst = edges.indices()
    assert sorted(zip(src.tolist(), dst.tolist(), strict=True)) == sorted(zip(*edge_index.tolist(), strict=True))
    monkeypatch.setattr(graph, "CHUNK_ELEMENTS", 21)
    chunked = list(edges.chunks(3))  # 7 edges per chunk
    assert len(chunked) == 29
    assert torch.equal(torch.cat([part[0] for part in chunked]), src)
    assert torch.equal(torch.cat([part[1] for part in chunked]), dst)
    x = torch.randn(NODES, 3, dtype=torch.float64)
    dense = _dense(edge_index, torch.ones(200), NODES, "mean")
    torch.testing.assert_close(graph.spmm(x, edges, graph.GraphSpec(NODES, NODES, "mean")), dense @ x)
    torch.testing.assert_close(graph.spmm_adjoint(x, edges, graph.GraphSpec(NODES, NODES, "mean")), dense.T @ x)


def test_flow_target_to_source_reverses_the_edges():
    edge_index = _edge_index()
    spec = graph.GraphSpec(NODES, NODES, flow="target_to_source")
    edges = graph.edges(edge_index, None, spec, torch.float32)
    assert torch.equal(edges.src, edge_index[1]) and torch.equal(edges.dst, edge_index[0])


def test_edge_chunks_cover_every_edge_once(monkeypatch):
    monkeypatch.setattr(graph, "CHUNK_ELEMENTS", 64)
    parts = list(graph.edge_chunks(1000, 10))
    covered = torch.cat([torch.arange(1000)[part] for part in parts])
    assert torch.equal(covered, torch.arange(1000)) and len(parts) == 167  # 6 edges of width 10 per chunk
    x, edge_index = torch.randn(NODES, 10, dtype=torch.float64), _edge_index()
    expected = _dense(edge_index, torch.ones(200), NODES, "sum") @ x
    torch.testing.assert_close(
        graph.spmm(x, graph.Edges(edge_index[0], edge_index[1]), graph.GraphSpec(NODES, NODES)), expected
    )


def test_attention_edges_rebuild_self_loops_as_gat_does():
    """The valid edges, in order, are GATConv's: existing self-loops out, one per node appended."""
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 2, 2, 0]])
    src, dst, valid = graph.attention_edges(edge_index, 3, "source_to_target", self_loops=True, sparse=False)
    assert src.numel() == dst.numel() == valid.numel() == 4 + 3
    assert src[valid].tolist() == [0, 1, 2, 0, 1, 2] and dst[valid].tolist() == [1, 2, 0, 0, 1, 2]


def test_unknown_reduce_is_refused():
    with pytest.raises(ValueError, match="reduce='max' is not supported: use 'sum' or 'mean'"):
        graph.GraphSpec(3, 3, reduce="max")
