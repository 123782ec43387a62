"""Every model family of the zoo under ``torch.autocast`` (bf16, CPU), converted
beside its stock twin under the same autocast: the handlers and the
saved-tensor fallback (GPS, PNA, GENConv) run, give the stock output
dtype, and at 8 bits a gradient no further from the twin's than the twin's
own bf16 rounding is from its float32 gradient (or 5 %, where that rounding
happens to be smaller)."""

import copy
import warnings

import pytest
import torch

import iexact
from iexact.experiments.zoo import EDGE_DIM, zoo

NODES, FEATURES, HIDDEN, CLASSES = 300, 16, 32, 5
EDGE_INDEX = torch.randint(0, NODES, (2, 2000), generator=torch.Generator().manual_seed(0))
FAMILIES = list(zoo(FEATURES, HIDDEN, CLASSES, EDGE_INDEX))


def _gradient(model, inputs, autocast: bool):
    torch.manual_seed(3)  # the same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(*inputs)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype))
    return out.dtype, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_under_autocast_as_its_stock_twin(family):
    torch.manual_seed(0)
    model, reads_edges = zoo(FEATURES, HIDDEN, CLASSES, EDGE_INDEX)[family]()
    twin, float32_twin = copy.deepcopy(model), copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's warning, tested in tests/nn/test_fallback.py
        iexact.compress_(model, iexact.CompressionConfig(bits=8, block_size=64, rp_ratio=1))
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(NODES, FEATURES, generator=generator)
    inputs = (x, EDGE_INDEX, torch.randn(EDGE_INDEX.shape[1], EDGE_DIM, generator=generator))[: 3 if reads_edges else 2]
    dtype, ours = _gradient(model, inputs, autocast=True)
    stock_dtype, theirs = _gradient(twin, inputs, autocast=True)
    _, float32 = _gradient(float32_twin, inputs, autocast=False)
    assert dtype == stock_dtype
    rounding = (theirs - float32).norm() / float32.norm()
    assert (ours - theirs).norm() / theirs.norm() <= max(2 * rounding, 0.05)
