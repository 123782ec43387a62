"""``Dropout``: its mask as bits, or a snapshot of torch's generator and the mask redrawn in backward."""

import pytest
import torch
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
