"""Temporaries of a training step: how many full-width tensors are alive at once.

The saved activations are compressed, so on a large graph a step's peak is
set by what is alive *during* forward and backward. These tests count every
storage an op creates (not the inputs, parameters or views of them) and
check the compressed GraphSAGE step on a CSR adjacency stays within two
:math:`N \\times F` float tensors plus the row and edge chunks, and never
expands the adjacency's :math:`(E,)` target index.
"""

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch_geometric.nn.models import GraphSAGE
from torch_geometric.utils import to_torch_csr_tensor

import iexact
from iexact import graph
from iexact.quant import bitmask

NODES, EDGES, FEATURES, HIDDEN, CLASSES = 20000, 400000, 16, 64, 5
CHUNK = 2**17  # gathered elements per edge chunk in these tests: 2,048 edges, a tenth of N x F


class LiveStorage(TorchDispatchMode):
    """Bytes of the storages ops create that are still alive, and the peak;
    storages of the ``known`` tensors (inputs, parameters) and views of any
    op's inputs are not counted."""

    def __init__(self, known):
        super().__init__()
        self.known = {_key(part) for tensor in known for part in _parts(tensor)}
        self.now = self.peak = 0
        self.created = []  # (bytes, numel, dtype, op) of every storage
        self.alive = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = self.known | {_key(t) for t in tree_flatten((args, kwargs))[0] if _strided(t)}
        for tensor in tree_flatten(out)[0]:
            if not _strided(tensor) or _key(tensor) in inputs:
                continue  # an alias of an input
            storage = tensor.untyped_storage()
            inputs.add(_key(tensor))
            self.now += storage.nbytes()
            self.created.append((storage.nbytes(), tensor.numel(), tensor.dtype, str(func)))
            self.alive[len(self.created)] = self.created[-1]
            weakref.finalize(storage, self._free, len(self.created))
        self.peak = max(self.peak, self.now)
        return out

    def _free(self, index: int) -> None:
        self.now -= self.alive.pop(index)[0]


def _strided(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided


def _parts(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The strided tensors holding ``tensor``'s data (a sparse CSR tensor's three)."""
    if tensor.layout == torch.sparse_csr:
        return tensor.crow_indices(), tensor.col_indices(), tensor.values()
    return (tensor,)


def _key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(NODES, FEATURES, generator=generator)
    edge_index = torch.randint(0, NODES, (2, EDGES), generator=generator)
    labels = torch.randint(0, CLASSES, (NODES,), generator=generator)
    return x, to_torch_csr_tensor(edge_index.flip(0), size=NODES), labels


def _step(model, x, adj_t, labels) -> tuple[LiveStorage, LiveStorage]:
    """What the forward and the backward of one training step create."""
    model.train()
    model(x, adj_t).sum().backward()  # parameters' .grad exist before the measured step
    known = [x, adj_t, labels, *model.parameters(), *(p.grad for p in model.parameters()), *model.buffers()]
    forward = LiveStorage(known)
    with forward:
        loss = torch.nn.functional.cross_entropy(model(x, adj_t), labels)
    forward.kept = forward.now  # what backward will read
    backward = LiveStorage(known)
    with backward:
        loss.backward()
    return forward, backward


def _model(compressed: bool):
    torch.manual_seed(0)
    model = GraphSAGE(FEATURES, HIDDEN, num_layers=3, out_channels=CLASSES, norm="batch", dropout=0.5)
    return iexact.compress_(model, iexact.CompressionConfig()) if compressed else model


def test_compressed_sage_step_holds_at_most_two_full_width_tensors(monkeypatch):
    monkeypatch.setattr(graph, "CHUNK_ELEMENTS", CHUNK)
    monkeypatch.setattr(bitmask, "SELECT_CHUNK", CHUNK)  # the kept ReLU signs, packed a slice at a time
    x, adj_t, labels = _data()
    unit = NODES * HIDDEN * 4
    # two edge chunks of gathered float messages, two row slices (A_c X and its product with a weight)
    chunks = 4 * CHUNK * 4
    vectors = NODES * 8 * 4  # per-node vectors: degrees, their reciprocals, the logits
    forward, backward = _step(_model(True), x, adj_t, labels)
    # what the forward keeps for backward: compressed activations and the logits
    assert forward.kept < 0.5 * unit
    # forward: the layer's input (held by the caller) and the output X W_r, to which (A_c X) W_l is added
    assert forward.peak <= 2 * unit + chunks + forward.kept + vectors
    # backward: dY with the restored input (for dW_l), then dY with dX
    assert backward.peak <= 2 * unit + chunks + vectors
    fp32_forward, _ = _step(_model(False), x, adj_t, labels)
    assert fp32_forward.kept > 6 * unit  # the tracker sees what FP32 keeps


def test_a_csr_graph_is_never_expanded_to_an_edge_index(monkeypatch):
    monkeypatch.setattr(graph, "CHUNK_ELEMENTS", CHUNK)
    monkeypatch.setattr(bitmask, "SELECT_CHUNK", CHUNK)
    x, adj_t, labels = _data()
    indices = [
        numel
        for phase in _step(_model(True), x, adj_t, labels)
        for _, numel, dtype, _ in phase.created
        if dtype == torch.int64
    ]
    assert indices and max(indices) < EDGES / 2  # chunk-sized target indices only


def test_an_eval_pass_of_a_compressed_sage_holds_two_full_width_tensors_fewer_than_pygs(monkeypatch):
    monkeypatch.setattr(graph, "CHUNK_ELEMENTS", CHUNK)
    x, adj_t, _ = _data()
    unit = NODES * HIDDEN * 4
    passes = {}
    for compressed in (True, False):
        model = _model(compressed).eval()
        tracker = LiveStorage([x, adj_t, *model.parameters(), *model.buffers()])
        with torch.no_grad(), tracker:
            out = model(x, adj_t)
        passes[compressed] = tracker.peak, out
    assert torch.equal(passes[True][1], passes[False][1])
    # PyG's SAGEConv: its input, lin_l(A X), lin_r(X) and their sum
    assert passes[False][0] > 3.5 * unit
    # the compressed conv: its input and Y = lin_r(X), to which lin_l(A_c X) adds a slice at a time
    assert passes[True][0] <= 2 * unit + 2 * CHUNK * 4 + NODES * 8 * 4
