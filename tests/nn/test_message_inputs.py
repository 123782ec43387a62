"""Every input form and integration PyG gives a conv, on every converted conv against its stock twin.

The convs are the handlers' own examples (:mod:`tests.nn.examples`), one per
conv class; a conv's own forms (static graphs, bipartite pairs) are in its
test file. A malformed input must raise PyG's own error. The last test
compares the handlers' signatures with PyG's, so an upgrade that adds an
argument (a new input form) fails here.
"""

import copy
import inspect
import warnings

import pytest
import torch
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

import iexact
from iexact.nn import HANDLERS, is_compressed

from .examples import conv_examples
from .forms import EIGHT_BITS, F_IN, N, compare, edges, features

CONVS = {}
for _example in conv_examples():  # the first example of each conv class
    CONVS.setdefault(type(_example.build(F_IN)).__name__, _example)


def _factory(name):
    return lambda: CONVS[name].build(F_IN)


def _takes_size(name) -> bool:
    return "size" in inspect.signature(type(CONVS[name].build(F_IN)).forward).parameters


@pytest.mark.parametrize("flow", ["source_to_target", "target_to_source"])
@pytest.mark.parametrize("name", sorted(CONVS))
def test_flow_and_size_argument(name, flow):
    def build():
        conv = CONVS[name].build(F_IN)
        conv.flow = flow
        return conv

    kwargs = {"size": (N, N)} if _takes_size(name) else {}
    compare(build, lambda conv, x: CONVS[name].call(conv, x, edges(), **kwargs), [features(N, F_IN)])


@pytest.mark.parametrize("name", sorted(CONVS))
def test_empty_graphs_and_graphs_without_edges(name):
    empty = torch.empty(2, 0, dtype=torch.long)
    compare(_factory(name), lambda conv, x: CONVS[name].call(conv, x, empty), [features(N, F_IN)])
    try:
        CONVS[name].call(_factory(name)(), features(0, F_IN), empty)
    except RuntimeError as stock:  # ChebConv's largest eigenvalue of no nodes: the compressed conv says the same
        conv = iexact.compress_(_factory(name)(), EIGHT_BITS)
        with pytest.raises(RuntimeError) as ours:
            CONVS[name].call(conv, features(0, F_IN), empty)
        assert str(ours.value) == str(stock)
        return
    compare(_factory(name), lambda conv, x: CONVS[name].call(conv, x, empty), [features(0, F_IN)])


def test_sparse_input_features_run_the_stock_forward():
    x = torch.randn(N, F_IN).to_sparse()
    compare(_factory("GCNConv"), lambda conv, x: conv(x, edges()), [x], warns="sparse tensor")


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch_sparse is not installed")
@pytest.mark.parametrize("name", sorted(CONVS))
def test_torch_sparse_adjacency_runs_the_stock_forward(name):
    adj_t = SparseTensor.from_edge_index(edges(), sparse_sizes=(N, N)).t()
    run = lambda conv, x: CONVS[name].call(conv, x, adj_t)  # noqa: E731
    compare(_factory(name), run, [features(N, F_IN)], warns="SparseTensor")


@pytest.mark.parametrize("name", sorted(CONVS))
def test_explain_masks_set_after_conversion_are_honoured(name):
    """set_masks after compress_: the mask changes the output and gets its gradient, as in PyG."""
    edge_index = edges()

    def run(conv, x, mask):
        set_masks(conv, mask, edge_index, apply_sigmoid=True)
        try:
            return CONVS[name].call(conv, x, edge_index)
        finally:
            clear_masks(conv)

    inputs = [features(N, F_IN), features(edge_index.shape[1], seed=4)]
    try:
        run(_factory(name)(), *inputs)
    except (TypeError, AssertionError) as stock:
        # PyG's own RGCNConv checks each relation's edges against the whole mask, and a FastRGCNConv built after
        # an RGCNConv explains with RGCNConv's propagate: the converted conv fails as its twin does
        with pytest.raises(type(stock)) as ours:
            run(iexact.compress_(_factory(name)(), EIGHT_BITS), *inputs)
        assert str(ours.value) == str(stock)
        return
    compare(_factory(name), run, inputs, warns="explain")


def test_explain_masks_on_a_copied_converted_conv():
    """Unpickling (deepcopy) a converted conv must not leave it a propagate without explain support."""
    edge_index = edges()

    def run(conv, x, mask):
        conv = copy.deepcopy(conv)
        set_masks(conv, mask, edge_index, apply_sigmoid=True)
        return conv(x, edge_index)

    compare(_factory("SAGEConv"), run, [features(N, F_IN), features(edge_index.shape[1], seed=4)], warns="explain")


@pytest.mark.parametrize("kind", ["propagate", "message"])
@pytest.mark.parametrize("name", sorted(CONVS))
def test_propagate_and_message_hooks_fire(name, kind):
    calls = []

    def run(conv, x):
        handle = getattr(conv, f"register_{kind}_forward_hook")(lambda *args: calls.append(is_compressed(conv)))
        try:
            return CONVS[name].call(conv, x, edges())
        finally:
            handle.remove()

    compare(_factory(name), run, [features(N, F_IN)], warns=f"{kind} forward hooks")
    assert calls.count(True) == calls.count(False) > 0  # as often in the converted conv as in its twin


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("bad", ["transposed", "three rows", "float"])
def test_malformed_edge_index_raises_pygs_error(name, bad):
    """As PyG's own forward raises it, in training and in eval()."""
    edge_index = {
        "transposed": edges().t().contiguous(),
        "three rows": torch.randint(0, N, (3, 60)),
        "float": edges().float(),
    }[bad]
    conv, twin = _factory(name)(), _factory(name)()
    iexact.compress_(conv, EIGHT_BITS)
    errors = []
    for layer in (conv, twin, conv.eval()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as error:
                CONVS[name].call(layer, features(N, F_IN), edge_index)
        errors.append((type(error.value), str(error.value)))
    assert errors[0] == errors[1] == errors[2]


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("node", [N + 3, -1])
def test_node_indices_out_of_range_raise(name, node):
    """An index past the nodes (or negative) fails in training as it does in eval(), never trains."""
    edge_index = torch.cat([edges(), torch.tensor([[2], [node]])], dim=1)
    conv = _factory(name)()
    iexact.compress_(conv, EIGHT_BITS)
    with pytest.raises((IndexError, RuntimeError, ValueError), match="index|indices|dim_size"):
        CONVS[name].call(conv, features(N, F_IN), edge_index)


@pytest.mark.parametrize("base", sorted(HANDLERS, key=lambda cls: cls.__name__), ids=lambda cls: cls.__name__)
def test_handlers_take_exactly_pygs_arguments(base):
    """A handler's forward has the module's own signature: a new PyG argument fails here."""
    handler = HANDLERS[base]
    ours = inspect.signature(handler.forward).parameters
    theirs = inspect.signature(base.forward).parameters
    assert list(ours) == list(theirs)
    for key in ours:
        assert ours[key].default == theirs[key].default, key
