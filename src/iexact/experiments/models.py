r"""The reference models (the papers' ogbn-arxiv settings), built from stock PyG modules.

===============  =================================================================  =======
name             model                                                              dropout
===============  =================================================================  =======
``gcn``          ``GCN``: 3 layers, hidden 128, BatchNorm, ReLU                     0.5
``sage``         ``GraphSAGE``: 3 layers, hidden 128, BatchNorm, ReLU               0.5
``gcn2``         GCNII: linear in, 16 ``GCN2Conv`` layers of 256                    0.1
                 (:math:`\alpha = 0.5`, :math:`\theta = 0.5`), ReLU, linear out
``gat``          ``GAT``: 3 layers, hidden 128 (4 heads of 32), BatchNorm, ReLU     0.5
``gatv2``        ``GAT(v2=True)`` (``GATv2Conv``), sized as ``gat``                 0.5
``transformer``  :class:`GraphTransformer` (``TransformerConv``), sized as ``gat``  0.5
===============  =================================================================  =======

All train with Adam (lr 0.01), gradient-norm clipping at 0.5, full batch.
:func:`prepare_model` builds one as a run's :class:`~iexact.experiments.settings.Settings` say.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.utils.checkpoint
from torch_geometric.nn import GCN2Conv, MessagePassing, TransformerConv
from torch_geometric.nn.models import GAT, GCN, GraphSAGE
from torch_geometric.nn.models.basic_gnn import BasicGNN

from ..nn import compress_, configure_
from .data import num_classes
from .settings import RunKind, Settings


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Layer count, hidden width and dropout of a reference model."""

    layers: int
    hidden: int
    dropout: float


REFERENCE = {
    "gcn": ModelSpec(3, 128, 0.5),
    "sage": ModelSpec(3, 128, 0.5),
    "gcn2": ModelSpec(16, 256, 0.1),
    "gat": ModelSpec(3, 128, 0.5),
    "gatv2": ModelSpec(3, 128, 0.5),
    "transformer": ModelSpec(3, 128, 0.5),
}
MODELS = tuple(REFERENCE)


class GCNII(torch.nn.Module):
    r"""GCNII (Chen et al., 2020) from PyG's ``GCN2Conv``:
    :math:`X^{(0)} = \mathrm{ReLU}(X W_{in})`, then per layer :math:`\ell`
    :math:`X \leftarrow \mathrm{ReLU}(\mathrm{GCN2Conv}_\ell(\mathrm{dropout}(X), X^{(0)}))`,
    and :math:`\mathrm{dropout}(X) W_{out}`."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        layers: int,
        out_channels: int,
        dropout: float = 0.1,
        alpha: float = 0.5,
        theta: float = 0.5,
    ):
        super().__init__()
        self.lin_in = torch.nn.Linear(in_channels, hidden)
        self.convs = torch.nn.ModuleList(GCN2Conv(hidden, alpha, theta, layer + 1) for layer in range(layers))
        self.lin_out = torch.nn.Linear(hidden, out_channels)
        self.act = torch.nn.ReLU()
        self.dropout = torch.nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for module in (self.lin_in, self.lin_out, *self.convs):
            module.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index) -> torch.Tensor:
        x = x_0 = self.act(self.lin_in(self.dropout(x)))
        for conv in self.convs:
            x = self.act(conv(self.dropout(x), x_0, edge_index))
        return self.lin_out(self.dropout(x))


class GraphTransformer(BasicGNN):
    r"""PyG's ``BasicGNN`` stack of ``TransformerConv`` layers (Shi et al., 2021):
    norm, activation, dropout and jumping knowledge as ``GAT`` has them; hidden
    layers concatenate ``heads`` heads of ``hidden / heads`` channels, the
    last averages its heads; attention dropout is the model's dropout."""

    supports_edge_weight = False
    supports_edge_attr = True
    supports_norm_batch = True

    def init_conv(self, in_channels, out_channels: int, **kwargs) -> MessagePassing:
        heads = kwargs.pop("heads", 1)
        concat = not getattr(self, "_is_conv_to_out", False)
        if concat and out_channels % heads:
            raise ValueError(f"out_channels={out_channels} must be a multiple of heads={heads} for TransformerConv")
        channels = out_channels // heads if concat else out_channels
        return TransformerConv(in_channels, channels, heads=heads, concat=concat, dropout=self.dropout.p, **kwargs)


def build_model(
    name: str,
    in_channels: int,
    out_channels: int,
    layers: int | None = None,
    hidden: int | None = None,
    dropout: float | None = None,
) -> torch.nn.Module:
    """The reference model ``name`` (``gcn``, ``sage``, ``gcn2``, ``gat``, ``gatv2``, ``transformer``); ``layers``,
    ``hidden`` and ``dropout`` override the reference values."""
    if name not in REFERENCE:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    spec = REFERENCE[name]
    layers = spec.layers if layers is None else layers
    hidden = spec.hidden if hidden is None else hidden
    dropout = spec.dropout if dropout is None else dropout
    if layers < 1 or hidden < 1 or not 0 <= dropout < 1:
        raise ValueError(
            f"invalid model size: layers={layers} and hidden={hidden} must be >= 1, dropout={dropout} in [0, 1)"
        )
    if name == "gcn2":
        return GCNII(in_channels, hidden, layers, out_channels, dropout)
    common = dict(num_layers=layers, out_channels=out_channels, dropout=dropout, norm="batch")
    if name in ("gat", "gatv2", "transformer"):
        if hidden % 4:
            raise ValueError(f"hidden={hidden} must be a multiple of the 4 attention heads for {name}")
        if name == "transformer":
            return GraphTransformer(in_channels, hidden, heads=4, **common)
        return GAT(in_channels, hidden, heads=4, v2=name == "gatv2", **common)
    return {"gcn": GCN, "sage": GraphSAGE}[name](in_channels, hidden, **common)


def message_passing_layers(model: torch.nn.Module) -> int:
    """How many message-passing layers ``model`` has: the hops a neighbour sampler must cover."""
    return sum(isinstance(module, MessagePassing) for module in model.modules())


class CheckpointedLayer(torch.nn.Module):
    """Runs ``layer`` under ``torch.utils.checkpoint`` (non-reentrant): keeps its
    inputs and recomputes its forward in backward; the baseline users pick
    instead of compression."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        if not (self.training and torch.is_grad_enabled()):
            return self.layer(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(self.layer, *args, use_reentrant=False, **kwargs)


def checkpoint_layers_(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap every message-passing layer in ``model.convs`` in :class:`CheckpointedLayer`, in place."""
    convs = getattr(model, "convs", None)
    if not isinstance(convs, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no convs list to checkpoint")
    for index, conv in enumerate(convs):
        convs[index] = CheckpointedLayer(conv)
    return model


def hidden_width(settings: Settings) -> int:
    """The hidden width of ``settings``' model: its ``hidden``, or the reference model's."""
    return REFERENCE[settings.model].hidden if settings.hidden is None else settings.hidden


def prepare_model(settings: Settings, data, device: torch.device) -> torch.nn.Module:
    """The reference model of ``settings`` for ``data`` on ``device``, compressed
    (with a plan's per-module configs) or checkpointed as its kind says."""
    model = build_model(
        settings.model, data.num_features, num_classes(data), settings.layers, settings.hidden, settings.dropout
    ).to(device)
    if settings.batching is not None:
        settings.batching.check_layers(message_passing_layers(model))
    if settings.config is not None:
        configure_(compress_(model, settings.config), dict(settings.module_configs))
    elif settings.kind is RunKind.CHECKPOINTED:
        checkpoint_layers_(model)
    return model
