"""Helpers of the input-form checks: a converted module run against its stock twin on the same inputs.

:func:`compare` runs the converted module (8 bits, so gradients are near
exact) and an unconverted copy in training mode: outputs must be equal and
gradients aligned, and the module must either compress silently or run PyG's
own forward with one warning naming why.
"""

import copy
import warnings

import torch
import torch.nn.functional as F

import iexact
from iexact import CompressionConfig

EIGHT_BITS = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
N, F_IN, F_OUT = 20, 6, 5


def edges(num_src=N, num_dst=N, count=60, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, num_src, (count,), generator=generator),
            torch.randint(0, num_dst, (count,), generator=generator),
        ]
    )


def features(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


class WithEdgeFeatures(torch.nn.Module):
    """``conv(x, graph, edge_attr)`` with edge features made from the graph's
    edge count, so that the shared checks can call it as ``(x, graph)``."""

    def __init__(self, conv: torch.nn.Module, edge_dim: int):
        super().__init__()
        self.conv, self.edge_dim = conv, edge_dim

    def forward(self, x, graph):
        count = graph.shape[1]
        edge_attr = torch.randn(count, self.edge_dim, generator=torch.Generator().manual_seed(count))
        return self.conv(x, graph, edge_attr.to(x.device))


def compiles_as_eager(module, *inputs):
    """``module`` (converted) compiles with no graph break, and the compiled
    module's loss equals the eager one's under the same rounding noise and dropout."""
    explained = torch._dynamo.explain(module)(*inputs)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    losses = []
    for run in (compiled, module):
        iexact.nn.seed_streams(module)[0].set_state(torch.tensor([7, 0]))  # the same rounding noise
        torch.manual_seed(0)  # the same dropout
        losses.append(run(*inputs).square().sum())
    torch.testing.assert_close(losses[0], losses[1])


def compare(factory, run, inputs, warns: str | None = None, min_cosine: float = 0.999):
    """Run ``run(module, *inputs)`` on the converted module and on its twin and compare."""
    torch.manual_seed(0)
    module = factory()
    twin = copy.deepcopy(module)
    iexact.compress_(module, EIGHT_BITS)
    results = []
    for layer in (module, twin):
        leaves = [
            t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) and t.requires_grad else t
            for t in inputs
        ]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(1)
            out = run(layer, *leaves)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        out.backward(grad)
        ours = [str(w.message) for w in caught if "iexact" in str(w.message)]
        grads = [t.grad for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append((out.detach(), grads + [p.grad for p in layer.parameters()], ours))
    (out, grads, ours), (expected, expected_grads, _) = results
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # a gradient that is zero up to float32 rounding (a bias before a BatchNorm) has no direction
    rounding = max(1e-5, 1e-6 * max(b.norm().item() for b in expected_grads if b is not None))
    for a, b in zip(grads, expected_grads, strict=True):
        assert (a is None) == (b is None)
        if b is not None and b.norm() > rounding:
            assert F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0) > min_cosine
    if warns is None:
        assert ours == []
    else:
        assert len(ours) == 1 and warns in ours[0], ours
    return out
