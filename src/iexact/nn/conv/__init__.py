"""Compressed behaviour for PyG's message-passing layers."""
from .gcn import GCNConvMixin
from .gcn2 import GCN2ConvMixin
from .gin import GINConvMixin
from .sage import SAGEConvMixin

__all__ = ["GCNConvMixin", "GCN2ConvMixin", "GINConvMixin", "SAGEConvMixin"]
