r"""The bias statistic of the unbiasedness checks, and the graphs they run on.

With :math:`m` the mean of K draws, :math:`v` the per-element sample
variance and :math:`e` the FP32 gradient,

.. math::
    T = \frac{\lVert m - e \rVert^2}{\sum v / K},

about 1 for an unbiased estimator (:math:`\chi^2_n / n`) and
:math:`1 + K \lVert b \rVert^2 / \sum v` with a bias :math:`b`. The
thresholds (3.5 for tensors of 8 or more elements, 15 for smaller ones) are
exceeded by chance with probability below 1e-3.
"""

import copy

import torch
from torch_geometric import EdgeIndex
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

import iexact

DRAWS = 256
ROWS = 1000


def bias_statistic(samples: torch.Tensor, exact: torch.Tensor) -> float:
    """:math:`T` of ``samples`` (K draws stacked on dim 0) against ``exact``."""
    samples = samples.double().flatten(1)
    deviation = samples.mean(0) - exact.double().flatten()
    noise = samples.var(0).sum() / samples.shape[0]
    return (deviation.square().sum() / noise).item()


def threshold(numel: int) -> float:
    return 3.5 if numel >= 8 else 15.0


def random_graph(kind, device, nodes, count):
    """A random graph of ``nodes`` and ``count`` edges in the form ``kind``."""
    edge_index = torch.randint(0, nodes, (2, count), generator=torch.Generator().manual_seed(0)).to(device)
    if kind == "edge_index":
        return edge_index
    if kind == "EdgeIndex":
        return EdgeIndex(edge_index, sparse_size=(nodes, nodes))
    builder = to_torch_csr_tensor if kind == "csr" else to_torch_coo_tensor
    return builder(edge_index.flip(0), size=(nodes, nodes))  # adj_t: rows are targets


def one_copy_fails(monkeypatch, module, saving, call, parameter: str, draws: int = 1024) -> None:
    """The check passes ``module``'s INT2 gradient of ``parameter`` (over
    ``draws`` draws of ``call(module)``, against its uncompressed twin)
    and fails it once ``saving``'s ``pack`` returns one compressed copy for
    every pack of a tensor: the independent copies are what make it unbiased."""
    twin = copy.deepcopy(module)
    iexact.compress_(module, iexact.CompressionConfig(reference_inputs=False))
    grad = None

    def backward(layer):
        nonlocal grad
        out = call(layer)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)) if grad is None else grad
        out.backward(grad)
        return layer.get_parameter(parameter).grad

    exact = backward(twin)
    packed, two_copies = {}, saving.pack

    def one_copy(x, config, seeds, argument=False):
        return packed.setdefault(id(x), two_copies(x, config, seeds, argument))

    def statistic():
        samples = []
        for _ in range(draws):
            module.zero_grad()
            packed.clear()
            samples.append(backward(module).clone())
        return bias_statistic(torch.stack(samples), exact)

    assert statistic() < threshold(exact.numel())
    monkeypatch.setattr(saving, "pack", one_copy)
    assert statistic() > threshold(exact.numel())
