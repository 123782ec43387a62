r"""The contract every registered handler keeps, checked on the handlers' own examples.

- **Coverage**: every module class a handler of ``iexact.nn`` registers has
  at least one example (:mod:`tests.nn.examples`), so no handler goes unchecked.
- **Gradients**: at 8 bits without projection, the converted module's
  output equals its uncompressed twin's and its input and parameter
  gradients align with them (cosine similarity >= 0.999), for every graph
  form (``edge_index``, ``EdgeIndex``, CSR, COO), BatchNorm statistics included.
- **Unbiasedness** at INT2, each gradient separately: the first example of
  each handler's test file by default, every example with ``-m slow``.

The check is :func:`tests.nn.bias.bias_statistic` over K = 256 independent
compressions, about 1 for an unbiased estimator, against thresholds
exceeded by chance with probability below 1e-3. They are exceeded by the
estimator that multiplies one decompressed tensor by itself (the mistake
GAT's attention gradient once made), which
:func:`test_the_check_catches_a_squared_decompression` shows at the same K,
and by the attention of GATv2 and TransformerConv kept with one copy where
they keep two (their test files).

Graphs have ROWS = 1000 nodes: batch normalization's input gradient keeps a
documented O(1/N) bias (the i = j term of a sum of products, see
:class:`iexact.autograd.CompressedBatchNormFunction`), invisible at this N
as on any real graph; an O(1) bias such as the squared decompression is
visible at any N.
"""

import collections
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import iexact
from iexact import CompressionConfig
from iexact.nn import HANDLERS, is_compressed

from .bias import DRAWS, ROWS, bias_statistic, random_graph, threshold
from .examples import examples, handler_modules, statistical_examples

EIGHT_BITS = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
INT2 = CompressionConfig(reference_inputs=False)  # inputs compressed, not referenced
NODES, FEATURES = 50, 12
EXAMPLES = examples()


def test_every_registered_module_class_has_an_example():
    built = {type(example.build(FEATURES)) for example in EXAMPLES}
    for example in EXAMPLES:  # a network's modules count too (GINConv's MLP, an MLP's activations)
        built |= {type(module) for module in example.build(FEATURES).modules()}
    ours = {cls for cls, handler in HANDLERS.items() if handler.__module__ in handler_modules()}
    missing = sorted(cls.__name__ for cls in ours - built)
    assert not missing, f"no example builds {missing}: add one to the handler's tests/nn/test_<module>.py"


def _run(example, module, x, graph, grad_seed):
    torch.manual_seed(3)  # the same dropout masks for a module and its twin
    out = example.call(module, x, graph)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.device)
    out.backward(grad)
    return out


def _cosine(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


@pytest.mark.parametrize("graph_kind", ["edge_index", "EdgeIndex", "csr", "coo"])
@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_gradients_at_8_bits_match_the_uncompressed_twins(example, graph_kind, device):
    if not example.reads_graph and graph_kind != "edge_index":
        pytest.skip("no graph input")
    if graph_kind not in example.graphs:
        pytest.skip(f"the stock module refuses a {graph_kind} graph")
    torch.manual_seed(0)
    module = example.build(FEATURES).to(device)
    twin = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iexact.compress_(module, EIGHT_BITS)
    assert any(is_compressed(m) for m in module.modules())
    x = torch.randn(NODES, FEATURES, device=device)
    graph = random_graph(graph_kind, device, NODES, 300) if example.reads_graph else None
    results = []
    for layer in (module, twin):
        leaf = x.clone().requires_grad_()
        out = _run(example, layer, leaf, graph, grad_seed=1)
        results.append((out.detach(), [leaf.grad] + [p.grad for p in layer.parameters()]))
    (ours, our_grads), (theirs, their_grads) = results
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert our_grads[0] is not None
    for a, b in zip(our_grads, their_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b.norm() > 1e-5:  # a zero gradient (a bias before BatchNorm) has no direction
            assert _cosine(a, b) >= 0.999
    for a, b in zip(module.buffers(), twin.buffers(), strict=True):  # BatchNorm running statistics
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_what_a_handler_makes_is_never_kept_as_the_callers(example):
    """An input that needs no gradient (``data.x``) makes the tensors a handler
    computes from it leaves without ``grad_fn``, like the caller's own; they
    must still be compressed (:func:`iexact.autograd.mark_intermediate`), so
    nothing is saved then that is not saved when the input needs a gradient
    (a GATConv with a frozen ``lin`` once kept its features whole)."""
    torch.manual_seed(0)
    module = iexact.compress_(example.build(FEATURES), CompressionConfig())
    graph = random_graph("edge_index", "cpu", NODES, 300) if example.reads_graph else None
    x = torch.randn(NODES, FEATURES)

    def saved(needs_gradient: bool) -> collections.Counter:
        call = _Call(example, module, graph)
        report = iexact.activation_memory(call, x.clone().requires_grad_(needs_gradient))
        return collections.Counter((kept.shape, kept.dtype) for kept in report.saved)

    assert not saved(False) - saved(True)


class _Call(torch.nn.Module):
    """``example.call(module, x, graph)`` as a module's forward of ``x`` alone."""

    def __init__(self, example, module, graph):
        super().__init__()
        self.example, self.module, self.graph = example, module, graph

    def forward(self, x):
        return self.example.call(self.module, x, self.graph)


def test_the_check_catches_a_squared_decompression():
    """Products of one INT2 decompression with itself are biased
    (E[x_hat^2] = x^2 + Var): the check must fail them and pass two independent copies."""
    x = torch.randn(ROWS, FEATURES)
    config = CompressionConfig(rp_ratio=1)
    seeds = iter(range(10**6))

    def decompressed():
        return iexact.decompress(iexact.compress(x, config, seed=next(seeds)))

    squared = torch.stack([decompressed().square() for _ in range(DRAWS)])
    independent = torch.stack([decompressed() * decompressed() for _ in range(DRAWS)])
    assert bias_statistic(squared, x * x) > threshold(x.numel()) > bias_statistic(independent, x * x)


@pytest.mark.parametrize("example", statistical_examples(), ids=str)
def test_int2_gradients_average_to_the_exact_ones(example):
    """Each parameter and input gradient separately (an attention vector's bias
    would drown in the weight matrix's gradient if they were pooled)."""
    torch.manual_seed(0)
    module = example.build(FEATURES)
    twin = copy.deepcopy(module)
    iexact.compress_(module, INT2)
    x = torch.randn(ROWS, FEATURES).requires_grad_()
    graph = random_graph("edge_index", "cpu", ROWS, 5 * ROWS) if example.reads_graph else None
    _run(example, twin, x, graph, grad_seed=1)
    exact = [x.grad.clone()] + [p.grad.clone() for p in twin.parameters() if p.requires_grad]
    draws = []
    for _ in range(DRAWS):
        x.grad = None
        module.zero_grad()
        _run(example, module, x, graph, grad_seed=1)
        draws.append([x.grad] + [p.grad for p in module.parameters() if p.requires_grad])
    checked = 0
    largest = max(reference.norm() for reference in exact)
    for index, reference in enumerate(exact):
        if reference.norm() < 1e-4 * largest:
            continue  # a gradient that is zero up to rounding (a bias before batch norm)
        samples = torch.stack([draw[index] for draw in draws])
        if samples.var(0).sum() < 1e-12 * reference.square().sum():
            torch.testing.assert_close(samples[0], reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
            continue  # kept exactly: no noise, no bias
        statistic = bias_statistic(samples, reference)
        assert statistic < threshold(reference.numel()), (index, tuple(reference.shape), statistic)
        checked += 1
    assert checked >= 1
