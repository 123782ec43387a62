r"""The dtype rules of :mod:`iexact.autograd.precision`, and every handler
under ``torch.autocast("cpu", dtype=torch.bfloat16)``, as its stock twin
under the same autocast.

- **Forward**: the same output dtype (a linear map's bf16, a bias parameter's
  promotion to float32, attention's float32 weights), values equal up to
  bf16 rounding (the ops run in another order), in training and, bit for
  bit, in eval; float32 and bf16 inputs, an ``edge_index`` and a CSR graph
  (GraphSAGE's row-sliced path). Where PyG's own CSR products have no bf16
  kernel (GCN's, GIN's, SAGE's on a bf16 input) the stock module fails, and
  so does the converted one in eval (it runs the stock forward); in
  training the converted one trains, checked against the stock module
  in float32.
- **Backward**: at 8 bits every gradient near the twin's, in the dtype of
  what it is the gradient of. Near, not within one rounding: where the two
  forwards differ by a bf16 rounding (another order of the same ops), an
  activation's input may change sign, which moves a whole element of the
  gradient below it (2 flips of 800 elements move a 2-layer GraphSAGE's
  first-layer gradients by 8 %), so the bound is 20 % of the twin's norm.
- **Unbiasedness** at INT2 as without autocast (:mod:`tests.nn.test_handler`):
  bf16 rounding (relative :math:`2^{-8}`) is far below one draw's noise, so
  the same statistic and thresholds hold.
"""

import copy
import warnings

import pytest
import torch
from torch_geometric.nn.models import GAT, GCN, GraphSAGE

import iexact
from iexact import CompressionConfig
from iexact.autograd.precision import matmul_dtype, plus_linear_bias, plus_parameter
from tests.nn.bias import ROWS, bias_statistic, random_graph, threshold
from tests.nn.examples import examples, statistical_examples

EIGHT_BITS = CompressionConfig(bits=8, block_size=64, rp_ratio=1)
INT2 = CompressionConfig(reference_inputs=False)
NODES, FEATURES = 50, 12
EXAMPLES = examples()
BF16 = torch.bfloat16
FORWARD_TOLERANCE = 2**-5  # of the largest output: a few bf16 roundings (relative 2^-8 each)
GRADIENT_TOLERANCE = 0.2  # relative (see the module docstring), with a floor of 1 % of the largest gradient


def test_the_dtype_rules_are_the_stock_ops():
    y, bias = torch.randn(4, 3, dtype=BF16), torch.randn(3)
    weight = torch.randn(3, 3)
    with torch.autocast("cpu", dtype=BF16):
        assert plus_linear_bias(y, bias).dtype == torch.nn.functional.linear(y, weight, bias).dtype == BF16
        assert matmul_dtype(torch.randn(2, 2), torch.randn(2, 2)) == (torch.randn(2, 2) @ torch.randn(2, 2)).dtype
        assert matmul_dtype(torch.randn(2, 2).double(), torch.randn(2, 2)) == torch.float64  # autocast leaves it
    assert matmul_dtype(y, y) == BF16 and matmul_dtype(y, weight) == torch.float32
    promoted = plus_parameter(y.clone(), bias)
    assert promoted.dtype == (y + bias).dtype == torch.float32
    torch.testing.assert_close(promoted, y + bias)
    own = torch.randn(4, 3)
    assert plus_parameter(own, bias) is own  # in place where the dtype stays
    assert plus_parameter(own, None) is own and plus_linear_bias(own, None) is own


def _run(example, module, x, graph, train: bool, autocast: bool = True):
    module.train(train)
    torch.manual_seed(3)  # the same dropout masks for a module and its twin
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        out = example.call(module, x, graph)
    if train:
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        out.backward(grad.to(out.dtype))
    return out.detach()


def _outputs(example, layer, x, graph, train: bool, autocast: bool = True):
    """``layer``'s output on a copy of ``x``, and the gradients of that copy and of its parameters."""
    leaf = x.clone().requires_grad_(train)
    out = _run(example, layer, leaf, graph, train, autocast)
    grads = [leaf.grad] + [None if p.grad is None else p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    return out, grads


def _converted(example, config):
    torch.manual_seed(0)
    module = example.build(FEATURES)
    twin = copy.deepcopy(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        iexact.compress_(module, config)
    return module, twin


@pytest.mark.parametrize("input_dtype", [torch.float32, BF16], ids=["float32 input", "bf16 input"])
@pytest.mark.parametrize("graph_kind", ["edge_index", "csr"])
@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_a_converted_module_under_autocast_is_its_twin(example, graph_kind, input_dtype):
    if graph_kind not in example.graphs or (not example.reads_graph and graph_kind != "edge_index"):
        pytest.skip(f"no {graph_kind} graph for this module")
    module, twin = _converted(example, EIGHT_BITS)
    x = torch.randn(NODES, FEATURES).to(input_dtype)
    graph = random_graph(graph_kind, "cpu", NODES, 300) if example.reads_graph else None
    for train in (False, True):  # eval first, before training moves BatchNorm's statistics
        stock_runs = True
        try:
            theirs, their_grads = _outputs(example, twin, x, graph, train)
        except (RuntimeError, NotImplementedError) as error:  # PyG's CSR products have no bf16 kernel
            if not train:  # eval runs the stock forward: it fails alike
                with pytest.raises(type(error)):
                    _outputs(example, module, x, graph, train)
                continue
            stock_runs = False  # ours trains: checked against the stock module without autocast
            theirs, their_grads = _outputs(example, twin, x.float(), graph, train, autocast=False)
        ours, our_grads = _outputs(example, module, x, graph, train)
        assert ours.dtype == theirs.dtype or not stock_runs
        if not train:  # eval runs the stock forward
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
            continue
        scale = theirs.abs().max().item()
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=0, atol=FORWARD_TOLERANCE * scale)
        floor = 0.01 * max(g.float().norm() for g in their_grads if g is not None)
        for index, (a, b) in enumerate(zip(our_grads, their_grads, strict=True)):
            assert (a is None) == (b is None), index
            if a is not None:
                assert a.dtype == b.dtype or not stock_runs, index
                error = (a.float() - b.float()).norm()
                assert error <= GRADIENT_TOLERANCE * b.float().norm() + floor, (index, error, b.float().norm())


@pytest.mark.parametrize("example", statistical_examples(), ids=str)
def test_int2_gradients_under_autocast_average_to_the_twins(example):
    """Each parameter and input gradient separately, as without autocast, over 128 draws."""
    draws_wanted = 128
    module, twin = _converted(example, INT2)
    x = torch.randn(ROWS, FEATURES).requires_grad_()
    graph = random_graph("edge_index", "cpu", ROWS, 5 * ROWS) if example.reads_graph else None
    _run(example, twin, x, graph, train=True)
    exact = [x.grad.clone()] + [p.grad.clone() for p in twin.parameters() if p.requires_grad]
    draws = []
    for _ in range(draws_wanted):
        x.grad = None
        module.zero_grad()
        _run(example, module, x, graph, train=True)
        draws.append([x.grad] + [p.grad for p in module.parameters() if p.requires_grad])
    largest = max(reference.norm() for reference in exact)
    checked = 0
    for index, reference in enumerate(exact):
        samples = torch.stack([draw[index] for draw in draws])
        if reference.norm() < 1e-2 * largest or samples.var(0).sum() < 1e-12 * reference.square().sum():
            continue  # zero up to rounding (a bias before batch norm), or kept exactly (the first test's)
        statistic = bias_statistic(samples, reference)
        assert statistic < threshold(reference.numel()), (index, tuple(reference.shape), statistic)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("model_class", [GraphSAGE, GAT, GCN], ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("init_scale", [2.0**60, 2.0**8], ids=["overflowing scale", "scale that fits"])
def test_fp16_with_a_grad_scaler_takes_and_skips_the_steps_the_stock_model_does(model_class, init_scale):
    """fp16 autocast with ``torch.amp.GradScaler``: a scale whose gradients
    overflow reaches the scaler as Inf (the step skipped, the scale halved, no
    error from iexact), and one that fits trains, as for the stock model."""
    torch.manual_seed(0)
    model = model_class(FEATURES, 16, 2, 5, dropout=0.5, norm="batch_norm")
    twin = copy.deepcopy(model)
    iexact.compress_(model, CompressionConfig())
    generator = torch.Generator().manual_seed(1)
    x, labels = torch.randn(ROWS, FEATURES, generator=generator), torch.randint(0, 5, (ROWS,), generator=generator)
    graph = random_graph("edge_index", "cpu", ROWS, 5 * ROWS)
    trained = []
    for layer in (model, twin):
        start = [p.detach().clone() for p in layer.parameters()]
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
        scales = []
        for _ in range(3):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(layer(x, graph), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scales.append(scaler.get_scale())
        moved = any(not torch.equal(a, b) for a, b in zip(start, layer.parameters(), strict=True))
        trained.append((scales, moved, bool(torch.isfinite(loss))))
    assert trained[0] == trained[1]
    assert trained[0][1] == (init_scale < 2.0**20)
