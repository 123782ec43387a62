"""``GCNConv``: the input compressed, the normalized adjacency recomputed."""

from torch_geometric.nn import GCNConv

from .examples import Example
from .forms import F_IN, F_OUT, N, compare, edges, features

EXAMPLES = [
    Example("GCNConv", lambda channels: GCNConv(channels, 7)),
    Example("GCNConv cached improved", lambda channels: GCNConv(channels, 7, cached=True, improved=True)),
]


def test_static_graphs():
    """x of shape (B, N, F) with node_dim=-2 aggregates along N."""
    out = compare(lambda: GCNConv(F_IN, F_OUT), lambda conv, x: conv(x, edges()), [features(3, N, F_IN)])
    assert out.shape == (3, N, F_OUT)
