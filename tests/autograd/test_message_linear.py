"""PNA's tower message through its first linear maps: PyG's values, exact input gradients, unbiased weight gradients."""

import pytest
import torch
import torch.nn.functional as F

import iexact
from iexact import CompressionConfig
from iexact.autograd import TowerMessageLinearFunction, TowerSpec
from tests.nn.bias import bias_statistic, threshold

NODES, EDGES, WIDTH, HIDDEN = 40, 300, 4, 5


def _inputs(towers: int, divided: bool, with_edges: bool):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NODES, WIDTH * (towers if divided else 1), generator=generator).requires_grad_()
    edges = torch.randn(EDGES, WIDTH, generator=generator).requires_grad_() if with_edges else None
    src, dst = torch.randint(0, NODES, (2, EDGES), generator=generator)
    torch.manual_seed(1)
    layers = [torch.nn.Linear((3 if with_edges else 2) * WIDTH, HIDDEN) for _ in range(towers)]
    return x, edges, src, dst, layers


def _stock(x, edges, src, dst, layers, divided):
    """PNAConv's forward and message, as PyG computes them."""
    towers = len(layers)
    x = x.view(-1, towers, WIDTH) if divided else x.view(-1, 1, WIDTH).repeat(1, towers, 1)
    parts = [x.index_select(0, dst), x.index_select(0, src)]
    if edges is not None:
        parts.append(edges.view(-1, 1, WIDTH).repeat(1, towers, 1))
    h = torch.cat(parts, dim=-1)
    return [layer(h[:, t]) for t, layer in enumerate(layers)]


def _ours(x, edges, src, dst, layers, divided, config):
    spec = TowerSpec(len(layers), WIDTH, divided)
    parameters = [p for layer in layers for p in (layer.weight, layer.bias)]
    return TowerMessageLinearFunction.apply(x, edges, src, dst, spec, config, config, None, *parameters)


@pytest.mark.parametrize(("towers", "divided"), [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("with_edges", [False, True])
def test_pygs_values_bit_for_bit_exact_input_gradients_and_near_exact_weight_gradients_at_8_bits(
    towers, divided, with_edges
):
    x, edges, src, dst, layers = _inputs(towers, divided, with_edges)
    leaves = [x] + ([edges] if with_edges else [])
    parameters = [p for layer in layers for p in (layer.weight, layer.bias)]
    grads = [torch.randn(EDGES, HIDDEN, generator=torch.Generator().manual_seed(4 + t)) for t in range(towers)]
    expected = _stock(x, edges, src, dst, layers, divided)
    reference = torch.autograd.grad(expected, leaves + parameters, grads)
    config = CompressionConfig(bits=8, block_size=64, rp_ratio=1, reference_inputs=False)
    outs = _ours(x, edges, src, dst, layers, divided, config)
    assert all(torch.equal(a, b) for a, b in zip(outs, expected, strict=True))
    ours = torch.autograd.grad(outs, leaves + parameters, grads)
    for a, b in zip(ours[: len(leaves)], reference, strict=False):
        torch.testing.assert_close(a, b)  # the input gradients need nothing kept
    for a, b in zip(ours[len(leaves) :], reference[len(leaves) :], strict=True):
        assert F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0) > 0.9999


def test_keeps_the_node_and_edge_features_once_for_all_towers_and_its_int2_weight_gradients_are_unbiased():
    x, edges, src, dst, layers = _inputs(towers=2, divided=False, with_edges=True)
    x, edges = x.detach(), edges.detach()
    config = CompressionConfig(rp_ratio=1, reference_inputs=False)  # compressed, not referenced
    outs = _ours(x, edges, src, dst, layers, False, config)
    held = {t.data_ptr() for t in (src, dst, *(layer.weight for layer in layers))}
    saved = [t for t in outs[0].grad_fn.saved_tensors if t.data_ptr() not in held]
    expected = sum(iexact.codec.stored_bytes(tuple(t.shape), config) for t in (x, edges))
    assert sum(t.nbytes for t in saved) == expected  # no E x 3F concatenation, nothing per tower
    grads = [torch.randn(EDGES, HIDDEN, generator=torch.Generator().manual_seed(4 + t)) for t in range(2)]
    weights = [layer.weight for layer in layers]
    exact = torch.cat(torch.autograd.grad(_stock(x, edges, src, dst, layers, False), weights, grads), 1)

    def ours():
        return torch.cat(torch.autograd.grad(_ours(x, edges, src, dst, layers, False, config), weights, grads), 1)

    def draws(weight_gradient):
        return torch.stack([weight_gradient() for _ in range(1000)])

    assert bias_statistic(draws(ours), exact) < threshold(exact.numel())
    # the check sees a bias of 20 % on the second tower's edge block alone
    biased = torch.ones_like(exact)
    biased[:, -WIDTH:] = 1.2
    assert bias_statistic(draws(lambda: ours() * biased), exact) > threshold(exact.numel())
