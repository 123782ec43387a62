"""Heterogeneous models: to_hetero, HeteroConv of mixed convs, RGCNConv, FastRGCNConv and HGTConv on a small two-type
graph (the models of ``benchmarks/hetero.py``), against their unconverted twins."""

import copy
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

import iexact
from iexact import CompressionConfig
from iexact.nn import is_compressed

EIGHT_BITS = CompressionConfig(bits=8, rp_ratio=1)
_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hetero.py"
_SPEC = importlib.util.spec_from_file_location("hetero", _SCRIPT)
hetero = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(hetero)

# the least activation-memory ratio to FP32 with the default config
LEAST_RATIOS = {
    "to_hetero(GraphSAGE)": 50,
    "HeteroConv of mixed convs": 25,  # its own functional ReLUs one bit per element (iexact.nn.model_code)
    "RGCNConv": 7,  # the rest: the relation types and edges its forward builds, saved as torch saves them
    "FastRGCNConv": 150,
    "HGTConv": 3.5,
}


def _run(model, inputs):
    torch.manual_seed(1)
    out = model(*inputs)
    model.zero_grad()
    hetero.loss(out).backward()
    return out, {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("name", list(LEAST_RATIOS))
def test_heterogeneous_models_are_compressed_and_train_as_their_twins(name):
    data = hetero.two_type_graph()
    build, inputs = hetero.builders(data)[name]
    stock = hetero.stock(build, inputs)
    converted, default = copy.deepcopy(stock), copy.deepcopy(stock)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback names what it takes
        iexact.compress_(converted, EIGHT_BITS)
        iexact.compress_(default, CompressionConfig())
    assert any(is_compressed(module) for module in converted.modules())
    out, grads = _run(stock, inputs)
    ours, our_grads = _run(converted, inputs)
    for key in out:
        torch.testing.assert_close(ours[key], out[key], rtol=1e-5, atol=1e-6)  # the stock forward values
    for key, grad in grads.items():
        if grad is not None:
            assert (our_grads[key] - grad).norm() <= 0.05 * grad.norm() + 1e-6, key  # 8 bits, no projection
    fp32, kept = iexact.activation_memory(stock, *inputs), iexact.activation_memory(default, *inputs)
    assert fp32.total > LEAST_RATIOS[name] * kept.total
