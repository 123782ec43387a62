r"""Every model family people train today, for ``iexact bench memory --models``.

Each is built with 3 layers of ``hidden`` channels on a random graph
(``nodes`` nodes, ``edges`` random directed edges, ``features`` features,
16-dimensional edge features for the layers that read them): PyG's own
model classes where PyG has one (``GCN``, ``GraphSAGE``, ``GAT``, ``GAT(v2=True)``,
``GIN``, ``PNA``, ``EdgeCNN``), otherwise a :class:`Stack` of one conv class
with ReLU (or the named norm and activation) and dropout 0.5 between layers;
and GCN and GAT as PyG's examples write them, with dropout and the
activation as functions (:class:`FunctionalStack`).
:func:`zoo_report` measures each with FP32 beside the default config, and
with a ``max_error`` beside the plan of least memory measured within it
(:func:`iexact.plan_memory`).
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections.abc import Callable

import torch
from torch_geometric.nn import (
    ChebConv,
    GATConv,
    GCNConv,
    GENConv,
    GINEConv,
    GPSConv,
    GraphConv,
    ResGatedGraphConv,
    TransformerConv,
)
from torch_geometric.nn.models import GAT, GCN, GIN, PNA, EdgeCNN, GraphSAGE
from torch_geometric.utils import degree

from ..analysis import gradient_error
from ..config import CompressionConfig
from ..memory import activation_memory, format_bytes
from ..nn import compress_, original_class
from ..nn.fallback import FallbackHandler
from ..planning import PlanError, plan_memory
from .precision import autocast

EDGE_DIM = 16


class Stack(torch.nn.Module):
    """``convs``, each but the last followed by ``norm(hidden)`` (if any), ``act``
    and dropout 0.5; ``edge_attr`` passed to every conv when ``edges_featured``."""

    def __init__(self, convs: list, hidden: int, norm, act: torch.nn.Module, edges_featured: bool = False):
        super().__init__()
        self.convs = torch.nn.ModuleList(convs)
        self.norms = None if norm is None else torch.nn.ModuleList([norm(hidden) for _ in convs[:-1]])
        self.act, self.dropout, self.edges_featured = act, torch.nn.Dropout(0.5), edges_featured

    def forward(self, x, edge_index, edge_attr=None):
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index, edge_attr) if self.edges_featured else conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = self.dropout(self.act(x if self.norms is None else self.norms[i](x)))
        return x


class FunctionalStack(torch.nn.Module):
    """``convs`` as PyG's ``examples/gcn.py`` and ``gat.py`` call them: dropout
    0.5 before each and ``act`` after each but the last, as functions in the
    model's own forward (:mod:`iexact.nn.model_code`), not as modules."""

    def __init__(self, convs: list, act: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.convs, self.act = torch.nn.ModuleList(convs), act

    def forward(self, x, edge_index):
        for i, conv in enumerate(self.convs):
            x = conv(torch.nn.functional.dropout(x, p=0.5, training=self.training), edge_index)
            if i < len(self.convs) - 1:
                x = self.act(x)
        return x


def gine_conv(channels_in: int, channels_out: int) -> GINEConv:
    """GINEConv with a two-layer MLP reading :data:`EDGE_DIM` edge features."""
    mlp = torch.nn.Sequential(
        torch.nn.Linear(channels_in, channels_out), torch.nn.ReLU(), torch.nn.Linear(channels_out, channels_out)
    )
    return GINEConv(mlp, edge_dim=EDGE_DIM)


class GPSLayer(torch.nn.Module):
    """GPSConv (GINEConv beside 4-head attention of ``attn_type``, built with
    ``attention_options``) reading the edge features, as PyG's GPS example does."""

    def __init__(self, channels: int, attn_type: str = "multihead", **attention_options):
        super().__init__()
        self.gps = GPSConv(
            channels, gine_conv(channels, channels), heads=4, attn_type=attn_type, attn_kwargs=attention_options
        )

    def forward(self, x, edge_index, edge_attr):
        return self.gps(x, edge_index, edge_attr=edge_attr)


def _pyg_examples(widths: list[tuple[int, int]], hidden: int, classes: int) -> dict[str, Callable[[], tuple]]:
    """The builders of GCN and GAT as PyG's ``examples/gcn.py`` and ``gat.py`` write them (:class:`FunctionalStack`)."""
    return {
        "GCNConv, functional dropout and ReLU (PyG's gcn.py)": lambda: (
            FunctionalStack([GCNConv(i, o) for i, o in widths], torch.nn.functional.relu),
            False,
        ),
        "GATConv, functional dropout and ELU (PyG's gat.py)": lambda: (
            FunctionalStack(
                [GATConv(i, o // 8, heads=8, dropout=0.6) for i, o in widths[:-1]]
                + [GATConv(hidden, classes, heads=1, concat=False, dropout=0.6)],
                torch.nn.functional.elu,
            ),
            False,
        ),
    }


def zoo(features: int, hidden: int, classes: int, edge_index: torch.Tensor) -> dict[str, Callable[[], tuple]]:
    """Builders of each model, by name: ``build()`` returns ``(model, reads edge features)``."""
    widths = [(features, hidden), (hidden, hidden), (hidden, classes)]
    histogram = torch.bincount(degree(edge_index[1], dtype=torch.long))
    relu = torch.nn.ReLU
    return {
        "GCN": lambda: (GCN(features, hidden, 3, classes, dropout=0.5), False),
        "GraphSAGE": lambda: (GraphSAGE(features, hidden, 3, classes, dropout=0.5), False),
        "GAT": lambda: (GAT(features, hidden, 3, classes, dropout=0.5, heads=4), False),
        **_pyg_examples(widths, hidden, classes),
        "GAT(v2=True) (GATv2Conv)": lambda: (GAT(features, hidden, 3, classes, dropout=0.5, heads=4, v2=True), False),
        "TransformerConv + LayerNorm + GELU": lambda: (
            Stack(
                [TransformerConv(i, o // 4, heads=4) for i, o in widths[:-1]] + [TransformerConv(hidden, classes)],
                hidden,
                torch.nn.LayerNorm,
                torch.nn.GELU(),
            ),
            False,
        ),
        "GENConv (softmax) + LayerNorm": lambda: (
            Stack([GENConv(i, o, aggr="softmax", learn_t=True) for i, o in widths], hidden, torch.nn.LayerNorm, relu()),
            False,
        ),
        "ResGatedGraphConv": lambda: (Stack([ResGatedGraphConv(i, o) for i, o in widths], hidden, None, relu()), False),
        "GINEConv with edge_attr": lambda: (
            Stack([gine_conv(i, o) for i, o in widths], hidden, None, relu(), True),
            True,
        ),
        "GPSConv (GINEConv + attention)": lambda: (
            Stack(
                [gine_conv(features, hidden), GPSLayer(hidden), gine_conv(hidden, classes)], hidden, None, relu(), True
            ),
            True,
        ),
        "PNA (mean/max/std, amplification)": lambda: (
            PNA(
                features,
                hidden,
                3,
                classes,
                aggregators=["mean", "max", "std"],
                scalers=["identity", "amplification"],
                deg=histogram,
                dropout=0.5,
            ),
            False,
        ),
        "EdgeCNN (EdgeConv)": lambda: (EdgeCNN(features, hidden, 3, classes, dropout=0.5), False),
        "ChebConv (K=3)": lambda: (Stack([ChebConv(i, o, K=3) for i, o in widths], hidden, None, relu()), False),
        "GIN": lambda: (GIN(features, hidden, 3, classes, dropout=0.5), False),
        "GraphConv": lambda: (Stack([GraphConv(i, o) for i, o in widths], hidden, None, relu()), False),
    }


def _loss(labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The families' loss: cross-entropy against ``labels`` (in float32 under autocast)."""
    return lambda out: torch.nn.functional.cross_entropy(out.float(), labels)


def _family_row(model, inputs, labels, config, fallback, draws: int) -> tuple[int, float, str]:
    """``(FP32 bytes, ratio, cells)`` of one family in :func:`zoo_report`: ``model``
    measured uncompressed, then compressed in place, on ``inputs`` ``(x, edge_index, kwargs)``."""
    x, edge_index, kwargs = inputs
    fp32 = activation_memory(model, x, edge_index, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table names what the warning would
        compress_(model, config, fallback=fallback)
    report = activation_memory(model, x, edge_index, **kwargs)
    error = gradient_error(model, x, edge_index, loss_fn=_loss(labels), draws=draws, **kwargs)
    generic = {original_class(m).__name__ for m in model.modules() if isinstance(m, FallbackHandler)}
    ratio, kept = fp32.total / report.total, report.uncompressed / report.total
    cells = (
        f"{format_bytes(fp32.total, 'MiB')} | {format_bytes(report.total, 'MiB')} | {ratio:.1f}× "
        f"| {100 * kept:.0f} % | {error.whole:.3f} | {error.of_mean:.3f} | {', '.join(sorted(generic)) or '–'}"
    )
    return fp32.total, ratio, cells


def _planned_row(model, inputs, labels, fp32: int, max_error: float, draws: int) -> tuple[float | None, str]:
    """``(ratio, cells)`` of ``model`` (uncompressed, keeping ``fp32`` bytes)
    planned for the least memory within ``max_error`` (:func:`iexact.plan_memory`,
    its ``draws``): the FP32 ratio and the error the planner measured; ``None``
    where no plan was measured within it."""
    x, edge_index, kwargs = inputs
    loss = _loss(labels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = plan_memory(model, x, edge_index, loss_fn=loss, max_error=max_error, draws=draws, **kwargs)
            planned = plan.apply_(model)
    except PlanError:
        return None, " none within it | –"
    ratio = fp32 / activation_memory(planned, x, edge_index, **kwargs).total
    return ratio, f" {ratio:.1f}× | {plan.measured_error:.3f}"


def zoo_report(
    graph: tuple[int, int, int],
    hidden: int,
    draws: int,
    config: CompressionConfig,
    fallback: CompressionConfig,
    device: torch.device,
    precision: str = "32",
    max_error: float | None = None,
) -> str:
    r"""Per model family, on a random graph of ``(nodes, edges, features)``:
    activation memory in FP32 and with ``config`` (and ``fallback`` for the
    saved-tensor fallback), their ratio, what stays uncompressed, the
    modules the fallback compresses, and the whole-gradient relative error at
    initialization over ``draws`` draws with the error of their mean (the bias
    left); as Markdown. Under a ``precision`` other than ``"32"`` every
    measurement runs under its autocast (:mod:`~iexact.experiments.precision`):
    the FP32 column is then the autocast baseline. With ``max_error`` (float32
    only) each family is also planned for the least memory measured within
    it (:func:`_planned_row`)."""
    nodes, edges, features = graph
    generator = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, nodes, (2, edges), generator=generator).to(device)
    x = torch.randn(nodes, features, generator=generator).to(device)
    edge_attr = torch.randn(edges, EDGE_DIM, generator=generator).to(device)
    classes = 8
    labels = torch.randint(0, classes, (nodes,), generator=generator).to(device)
    under = "" if precision == "32" else f"; under {precision} autocast (FP32: uncompressed, the same autocast)"
    planned = "" if max_error is None else f" | planned, error ≤ {max_error:g} | its gradient error"
    lines = [
        f"{nodes:,} nodes, {edges:,} random edges, {features} features ({EDGE_DIM} per edge where read); "
        f"3 layers of {hidden}; {config}; the fallback {fallback}; gradient error over {draws} draws{under}",
        "",
        "| model | FP32 | compressed | ratio | of it uncompressed | gradient error | error of the mean "
        f"| through the fallback{planned} |",
        "|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|---:|" if planned else ""),
    ]
    ratios, planned_ratios = [], []
    for name, build in zoo(features, hidden, classes, edge_index).items():
        torch.manual_seed(0)
        model, featured = build()
        model = model.to(device)
        inputs = (x, edge_index, {"edge_attr": edge_attr} if featured else {})
        stock = copy.deepcopy(model)  # _family_row compresses model in place
        with autocast(precision, device):
            fp32, ratio, row = _family_row(model, inputs, labels, config, fallback, draws)
        ratios.append(ratio)
        if max_error is not None:  # float32 only: the FP32 bytes are the stock model's
            planned_ratio, cells = _planned_row(stock, inputs, labels, fp32, max_error, draws)
            planned_ratios.append(planned_ratio)
            row += f" |{cells}"
        lines.append(f"| {name} | {row} |")
    lines += ["", f"Median ratio {statistics.median(ratios):.1f}×, smallest {min(ratios):.1f}×."]
    if planned_ratios:
        within = [ratio for ratio in planned_ratios if ratio is not None]
        lines.append(
            f"Planned within {max_error:g}: {len(within)} of {len(planned_ratios)} families, median ratio "
            f"{statistics.median(within) if within else 0:.1f}×, smallest {min(within, default=0):.1f}×."
        )
    return "\n".join(lines)
