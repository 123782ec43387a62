"""``Dropout``: its mask as bits, or a snapshot of torch's generator and the mask redrawn in backward."""

import collections

import pytest
import torch
from torch_geometric.nn import GATConv, GATv2Conv, TransformerConv
from torch_geometric.nn.models import GraphSAGE

import iexact

from .examples import Example

EXAMPLES = [
    Example("Dropout", lambda channels: torch.nn.Dropout(0.3), "x", unbiased=False),  # the mask is exact
    # its dropout keeps the ReLU's signs (iexact.nn.fusion)
    Example("GraphSAGE, ReLU into dropout", lambda channels: GraphSAGE(channels, 16, 2, 7, dropout=0.5)),
]


@pytest.mark.parametrize("masks", ["auto", "bits", "seed"])
def test_dropout_keeps_bits_or_a_generator_snapshot_and_backward_reuses_its_mask(device, masks):
    dropout = iexact.compress_(torch.nn.Dropout(0.3), iexact.CompressionConfig(dropout_masks=masks))
    x = torch.rand(400, 30, device=device).add_(0.5).requires_grad_()
    out = dropout(x)
    kept = out != 0
    assert 0.6 < kept.float().mean().item() < 0.8
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    report = iexact.activation_memory(dropout, x)
    snapshot = torch.get_rng_state() if device.type == "cpu" else torch.cuda.get_rng_state(device)
    bits = masks == "bits" or (masks == "auto" and device.type == "cpu")  # the redraw costs more on CPU
    assert report.total == (400 * 30 // 8 if bits else snapshot.nbytes) and report.uncompressed == 0


def _graph_call(module, x):
    edge_index = torch.randint(0, x.shape[0], (2, 300), generator=torch.Generator().manual_seed(5))
    return module(x, edge_index)


ATTENTION = {
    "GATConv": (lambda: GATConv(16, 8, heads=2, dropout=0.3), (60, 16), _graph_call),
    "GATv2Conv": (lambda: GATv2Conv(16, 8, heads=2, dropout=0.3), (60, 16), _graph_call),
    "TransformerConv": (lambda: TransformerConv(16, 8, heads=2, dropout=0.3), (60, 16), _graph_call),
    "MultiheadAttention": (
        lambda: torch.nn.MultiheadAttention(16, 2, dropout=0.3, batch_first=True),
        (3, 20, 16),
        lambda module, x: module(x, x, x)[0],
    ),
}


def _attention_step(make, call, x, masks):
    """The gradients of one compressed step and the numels of the uint8 tensors it kept."""
    torch.manual_seed(0)
    module = iexact.compress_(make(), iexact.CompressionConfig(dropout_masks=masks))
    leaf = x.clone().requires_grad_()
    torch.manual_seed(1)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = call(module, leaf)
    grads = torch.autograd.grad(out.square().sum(), [leaf, *module.parameters()])
    return grads, collections.Counter(t.numel() for t in kept if t is not None and t.dtype == torch.uint8)


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_dropout_keeps_bits_or_the_snapshot_with_the_same_gradients(name):
    """The attention weights' dropout keeps its mask's bits or the generator snapshot as
    ``dropout_masks`` says; the mask is torch's draw either way, so the gradients are equal bit for bit."""
    make, shape, call = ATTENTION[name]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    seed_grads, seed_kept = _attention_step(make, call, x, "seed")
    bits_grads, bits_kept = _attention_step(make, call, x, "bits")
    assert all(torch.equal(a, b) for a, b in zip(seed_grads, bits_grads, strict=True))
    # the snapshot of the CPU generator, replaced by one bit per attention weight
    assert seed_kept - bits_kept == collections.Counter({torch.get_rng_state().numel(): 1})
    assert len(bits_kept - seed_kept) == 1
