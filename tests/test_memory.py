"""Activation accounting against exact byte counts."""

import dataclasses
import math

import pytest
import torch
from torch_geometric.nn import GCN2Conv
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

import iexact
from iexact import CompressionConfig
from iexact.memory import allocator_growth
from iexact.quant import selected_capacity

NODES, EDGES, FEATURES = 300, 1500, 16


def _packed_bytes(rows, width, config, project=True, center=True):
    """Bytes of one compressed rows x width activation, from the formula (not the code);
    ``center=False`` for one never centered (BatchNorm's normalized input)."""
    k = math.ceil(width / config.rp_ratio) if project else width
    projected = project and k < width
    k = k if projected else width
    group = k if config.block_size == "row" else config.block_size
    blocks = math.ceil(rows * k / group)
    centered = center and config.center and projected and rows >= 64  # iexact.codec.centered
    return math.ceil(rows * k * config.bits / 8) + 2 * 2 * blocks + 4 * width * centered + (8 if projected else 0)


def _graph():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(NODES, FEATURES, generator=generator), torch.randint(0, NODES, (2, EDGES), generator=generator)


def test_fp32_baseline_counts_each_storage_once():
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x, _ = _graph()
    report = iexact.activation_memory(model, x)
    # ReLU keeps its output, the second Linear keeps the same tensor: counted once;
    # the first Linear keeps the model's input, reported apart
    assert report.total == report.uncompressed == NODES * 32 * 4
    assert [layer.name for layer in report.layers] == ["1"]
    assert report.held_elsewhere >= x.nbytes


def test_forward_created_graph_tensors_count():
    model = GCN(FEATURES, 32, num_layers=2, out_channels=4)
    x, edge_index = _graph()
    report = iexact.activation_memory(model, x, edge_index)
    # stock GCNConv keeps the edge index with self-loops it creates
    assert any(t.dtype == torch.int64 and t.nbytes >= (EDGES + NODES) * 8 for t in report.saved)


@pytest.mark.parametrize("masks", ["auto", "seed"])
@pytest.mark.parametrize("preset", ["default", "exact", "iexact"])
def test_compressed_sage_bytes_equal_the_formula(preset, masks):
    config = dataclasses.replace(CompressionConfig.preset(preset), dropout_masks=masks)
    model = GraphSAGE(FEATURES, 32, num_layers=3, out_channels=4, norm="batch", dropout=0.5)
    iexact.compress_(model, config)
    x, edge_index = _graph()
    report = iexact.activation_memory(model, x, edge_index)
    first_input = 0 if config.reference_inputs else _packed_bytes(NODES, FEATURES, config)  # data.x by reference
    conv_inputs = first_input + 2 * _packed_bytes(NODES, 32, config)
    norms = 2 * _packed_bytes(NODES, 32, config, project=config.rp_norm, center=False)
    # each ReLU leaves its signs to the dropout after it: on CPU by default one bit per element, "kept and
    # positive"; redrawing, the signs of the elements it keeps and a snapshot of the CPU generator
    dropouts = 2 * NODES * 32 // 8 if masks == "auto" else 2 * (selected_capacity(NODES * 32, 0.5) // 8 + 5056)
    assert report.uncompressed == 2 * 32 * 4  # each BatchNorm's exact 1/sigma per column
    assert report.compressed == conv_inputs + norms + dropouts
    assert {layer.name for layer in report.layers} == {
        "convs.1",
        "convs.2",
        "norms.0.module",
        "norms.1.module",
        "dropout",
    } | ({"convs.0"} if first_input else set())
    table = str(report).splitlines()
    by_name = {line.split()[0]: line for line in table[1:-2]}
    assert by_name["convs.1"].split()[-2:] == [f"{_packed_bytes(NODES, 32, config):,}", "0"]
    assert by_name["norms.0.module"].split()[-1] == f"{32 * 4:,}"
    assert table[-2].split()[-2:] == [f"{report.compressed:,}", f"{report.uncompressed:,}"]
    assert table[-1].startswith(f"activation memory {report.total:,} B")


def test_rp_norm_projects_batchnorm_inputs():
    config = CompressionConfig(rp_norm=True)
    model = torch.nn.BatchNorm1d(64)
    iexact.compress_(model, config)
    report = iexact.activation_memory(model, torch.randn(NODES, 64))
    assert report.total == _packed_bytes(NODES, 64, config, center=False) + 64 * 4


@pytest.mark.parametrize("name", ["GCN", "GIN", "GCN2", "GAT"])
def test_reference_models_keep_nothing_uncompressed_but_exact_statistics(name):
    """What stays full precision is a statistic per row or column (a norm's 1/sigma,
    an attention softmax's per node and head), never an activation."""
    x, edge_index = _graph()
    if name == "GCN2":
        model = _GCNII()
    elif name == "GAT":
        model = GAT(FEATURES, 32, num_layers=3, out_channels=4, heads=4, act="elu", dropout=0.5)
    else:
        model = {"GCN": GCN, "GIN": GIN}[name](FEATURES, 32, num_layers=3, out_channels=4, norm="batch", dropout=0.5)
    fp32 = iexact.activation_memory(model, x, edge_index)
    iexact.compress_(model, CompressionConfig())
    report = iexact.activation_memory(model, x, edge_index)
    statistics = [kept for kept in report.saved if not kept.compressed]
    assert all(len(kept.shape) == 1 or kept.shape[-1] <= 4 for kept in statistics), statistics
    assert report.compressed > 0 and fp32.total > 10 * report.total


class _GCNII(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(FEATURES, 32)
        self.convs = torch.nn.ModuleList(GCN2Conv(32, alpha=0.1, theta=0.5, layer=i + 1) for i in range(4))
        self.act = torch.nn.ReLU()
        self.dropout = torch.nn.Dropout(0.1)

    def forward(self, x, edge_index):
        x = x_0 = self.act(self.lin(x))
        for conv in self.convs:
            x = self.act(conv(self.dropout(x), x_0, edge_index))
        return x


@pytest.mark.parametrize("compressed", [False, True])
def test_mode_is_restored_and_the_graph_is_freed(compressed):
    """The measuring forward's graph is dropped before returning: the allocator
    holds not one byte more afterwards, and an ``eval()`` model stays in eval."""
    model = GraphSAGE(FEATURES, 32, num_layers=2, out_channels=4, norm="batch", dropout=0.5)
    if compressed:
        iexact.compress_(model, CompressionConfig())
    model.eval()
    x, edge_index = _graph()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
        report = iexact.activation_memory(model, x, edge_index)
    assert report.total > 0 and not model.training
    assert sum(event.self_cpu_memory_usage for event in profile.events()) == 0


@pytest.mark.parametrize("config", [None, CompressionConfig(), CompressionConfig.exact()])
def test_allocator_agrees_with_the_accounting(config):
    """The CPU allocator's net growth during a training forward, less the output,
    is exactly what the report counts: nothing is kept that is not reported."""
    model = GraphSAGE(FEATURES, 32, num_layers=3, out_channels=4, norm="batch", dropout=0.5)
    if config is not None:
        iexact.compress_(model, config)
    x, edge_index = _graph()
    report = iexact.activation_memory(model, x, edge_index)
    assert allocator_growth(model, x, edge_index) == report.total


@pytest.mark.parametrize("name", ["gcn", "sage", "gcn2", "gat", "gatv2", "transformer"])
def test_allocator_agrees_for_every_compressed_reference_model(name):
    from iexact.experiments.models import build_model

    torch.manual_seed(0)
    model = build_model(name, FEATURES, 4, layers=4 if name == "gcn2" else None, hidden=16)
    iexact.compress_(model, CompressionConfig())
    x, edge_index = _graph()
    report = iexact.activation_memory(model, x, edge_index)
    exact = [kept for kept in report.saved if not kept.compressed]  # 1/sigma per column, attention per edge and head
    assert all(len(kept.shape) == 1 or kept.shape[-1] <= 4 for kept in exact), exact
    assert allocator_growth(model, x, edge_index) == report.total


def test_a_model_that_is_no_module_is_named():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        iexact.activation_memory(lambda x: x, torch.randn(3, 2))
