r"""Heterogeneous models on a two-type graph, compressed: ``python benchmarks/hetero.py``.

Prints a Markdown table for ``to_hetero(GraphSAGE)``, two ``HeteroConv``
layers of mixed convs, and two layers each of ``RGCNConv``, ``FastRGCNConv``
and ``HGTConv`` on a random graph of 2,000 papers and 1,500 authors (32
features, 8,000 edges per relation; the models of
``tests/integration/test_hetero.py``): FP32's activation memory beside the
default config's, what of it is uncompressed, and the whole-gradient error
at initialization (:func:`iexact.gradient_error`, ``--draws`` draws).
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings

import torch
from torch_geometric.data import HeteroData
from torch_geometric.nn import FastRGCNConv, GATConv, HeteroConv, HGTConv, RGCNConv, SAGEConv, to_hetero
from torch_geometric.nn.models import GraphSAGE

import iexact


def two_type_graph() -> HeteroData:
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


def loss(out) -> torch.Tensor:
    """The models' loss: the mean square of every node type's output, summed."""
    return sum(value.square().mean() for value in out.values())


def builders(data: HeteroData) -> dict:
    """By name: ``(build, the model's inputs)``."""
    dicts, whole = (data.x_dict, data.edge_index_dict), (data,)
    return {
        "to_hetero(GraphSAGE)": (
            lambda: to_hetero(GraphSAGE(-1, 32, num_layers=2, out_channels=8), data.metadata(), aggr="sum"),
            dicts,
        ),
        "HeteroConv of mixed convs": (Mixed, dicts),
        "RGCNConv": (lambda: Relational("rgcn", data.metadata()), whole),
        "FastRGCNConv": (lambda: Relational("fast rgcn", data.metadata()), whole),
        "HGTConv": (lambda: Relational("hgt", data.metadata()), whole),
    }


def stock(build, inputs) -> torch.nn.Module:
    """The model of ``build``, its lazy shapes initialized by one forward."""
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        model(*inputs)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=8, help="gradient-error draws (default: 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = two_type_graph()
    print("2,000 papers, 1,500 authors, 32 features, 8,000 edges per relation; 2 layers of 32; the default config")
    print()
    print("| model | FP32 | compressed | ratio | of it uncompressed | gradient error |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (build, inputs) in builders(data).items():
        model = stock(build, inputs)
        fp32 = iexact.activation_memory(model, *inputs).total
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback names what it takes
            compressed = iexact.compress_(copy.deepcopy(model), iexact.CompressionConfig())
        kept = iexact.activation_memory(compressed, *inputs)
        error = iexact.gradient_error(compressed, *inputs, loss_fn=loss, draws=args.draws).whole
        share = 100 * kept.uncompressed / kept.total
        print(
            f"| {name} | {fp32 / 2**20:.2f} MiB | {kept.total / 2**20:.2f} MiB | {fp32 / kept.total:.1f}× "
            f"| {share:.0f} % | {error:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
