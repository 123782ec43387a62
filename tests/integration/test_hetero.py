"""Heterogeneous models: to_hetero, HeteroConv of mixed convs, RGCNConv, FastRGCNConv and HGTConv on a small two-type
graph, against their unconverted twins."""

import copy
import warnings

import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.nn import FastRGCNConv, GATConv, HeteroConv, HGTConv, RGCNConv, SAGEConv, to_hetero
from torch_geometric.nn.models import GraphSAGE

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed

EIGHT_BITS = CompressionConfig(bits=8, rp_ratio=1)


def _graph() -> HeteroData:
    """2,000 papers and 1,500 authors of 32 features (tensors above the fallback's 64 KiB), 8,000 edges per relation."""
    generator = torch.Generator().manual_seed(0)
    data = HeteroData()
    data["paper"].x = torch.randn(2000, 32, generator=generator)
    data["author"].x = torch.randn(1500, 32, generator=generator)
    relations = {("paper", "cites", "paper"): (2000, 2000), ("author", "writes", "paper"): (1500, 2000)}
    relations[("paper", "rev_writes", "author")] = (2000, 1500)
    for relation, (sources, targets) in relations.items():
        source = torch.randint(0, sources, (8000,), generator=generator)
        data[relation].edge_index = torch.stack([source, torch.randint(0, targets, (8000,), generator=generator)])
    return data


class Mixed(torch.nn.Module):
    """Two HeteroConv layers of a GATConv, a SAGEConv and a SAGEConv with max aggregation (the fallback's)."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(
            HeteroConv(
                {
                    ("paper", "cites", "paper"): GATConv((-1, -1), 32, add_self_loops=False),
                    ("author", "writes", "paper"): SAGEConv((-1, -1), 32),
                    ("paper", "rev_writes", "author"): SAGEConv((-1, -1), 32, aggr="max"),
                },
                aggr="sum",
            )
            for _ in range(2)
        )

    def forward(self, x_dict, edge_index_dict):
        for conv in self.convs:
            x_dict = {key: x.relu() for key, x in conv(x_dict, edge_index_dict).items()}
        return x_dict


class Relational(torch.nn.Module):
    """RGCNConv or HGTConv twice, on the graph as PyG's examples feed them."""

    def __init__(self, kind: str, metadata):
        super().__init__()
        self.kind = kind
        if kind in ("rgcn", "fast rgcn"):
            conv = RGCNConv if kind == "rgcn" else FastRGCNConv
            self.convs = torch.nn.ModuleList([conv(32, 32, num_relations=3), conv(32, 32, num_relations=3)])
        else:
            self.convs = torch.nn.ModuleList([HGTConv(32, 32, metadata, heads=2) for _ in range(2)])

    def forward(self, data):
        if self.kind == "hgt":
            x_dict = data.x_dict
            for conv in self.convs:
                x_dict = {key: x.relu() for key, x in conv(x_dict, data.edge_index_dict).items()}
            return x_dict
        homogeneous = data.to_homogeneous()
        x = homogeneous.x
        for conv in self.convs:
            x = conv(x, homogeneous.edge_index, homogeneous.edge_type).relu()
        return {"paper": x[homogeneous.node_type == 0]}


def _loss(out) -> torch.Tensor:
    return sum(value.square().mean() for value in out.values())


def _run(model, inputs):
    torch.manual_seed(1)
    out = model(*inputs)
    model.zero_grad()
    _loss(out).backward()
    return out, {name: p.grad for name, p in model.named_parameters()}


def _builders(data):
    """By name: (build, the model's inputs, the least activation-memory ratio to FP32 with the default)."""
    dicts, whole = (data.x_dict, data.edge_index_dict), (data,)
    return {
        "to_hetero(GraphSAGE)": (
            lambda: to_hetero(GraphSAGE(-1, 32, num_layers=2, out_channels=8), data.metadata(), aggr="sum"),
            dicts,
            40,
        ),
        # the rest keep their models' own functional ReLUs full precision (no module boundary around them)
        "HeteroConv of mixed convs": (Mixed, dicts, 2),
        "RGCNConv": (lambda: Relational("rgcn", data.metadata()), whole, 1.4),
        "FastRGCNConv": (lambda: Relational("fast rgcn", data.metadata()), whole, 1.4),
        "HGTConv": (lambda: Relational("hgt", data.metadata()), whole, 3),
    }


@pytest.mark.parametrize(
    "name", ["to_hetero(GraphSAGE)", "HeteroConv of mixed convs", "RGCNConv", "FastRGCNConv", "HGTConv"]
)
def test_heterogeneous_models_are_compressed_and_train_as_their_twins(name):
    data = _graph()
    build, inputs, least_ratio = _builders(data)[name]
    torch.manual_seed(0)
    stock = build()
    with torch.no_grad():
        stock(*inputs)  # lazy shapes (-1) initialized
    converted, default = copy.deepcopy(stock), copy.deepcopy(stock)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback names what it takes
        iexact.compress_(converted, EIGHT_BITS)
        iexact.compress_(default, CompressionConfig())
    assert any(is_compressed(module) for module in converted.modules())
    out, grads = _run(stock, inputs)
    ours, our_grads = _run(converted, inputs)
    for key in out:
        torch.testing.assert_close(ours[key], out[key], rtol=1e-5, atol=1e-6)  # the stock forward values
    for key, grad in grads.items():
        if grad is not None:
            assert (our_grads[key] - grad).norm() <= 0.05 * grad.norm() + 1e-6, key  # 8 bits, no projection
    fp32, kept = iexact.activation_memory(stock, *inputs), iexact.activation_memory(default, *inputs)
    assert fp32.total > least_ratio * kept.total
