"""Compressed behaviour for PyG's message-passing layers."""
from .gat import GATConvMixin
from .gcn import GCNConvMixin
from .gcn2 import GCN2ConvMixin
from .gin import GINConvMixin
from .sage import SAGEConvMixin

__all__ = ["GATConvMixin", "GCNConvMixin", "GCN2ConvMixin", "GINConvMixin", "SAGEConvMixin"]
