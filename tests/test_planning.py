"""``plan_memory``: per-module configs within a budget, bytes and error predicted, then measured."""

import copy
import itertools
import random

import pytest
import torch

import iexact
from iexact import CompressionConfig
from iexact.experiments.data import load_dataset
from iexact.experiments.models import build_model
from iexact.experiments.train import loss_function
from iexact.nn import is_compressed
from iexact.planning import candidate_configs, least_bytes_within, least_error_within, verified_least_bytes

# a grid small enough for the suite, wide enough that plans mix configs
CANDIDATES = [
    CompressionConfig(bits=bits, block_size=block, rp_ratio=ratio)
    for bits, block, ratio in itertools.product((1, 2, 8), (64, 1024), (1, 4))
]
SIZES = {"gcn": {}, "sage": {}, "gat": {}, "gatv2": {}, "transformer": {}, "gcn2": {"layers": 4, "hidden": 32}}
REFERENCE = ["gcn", "sage", "gat", "gcn2"]


def _graph(nodes: int):
    data = load_dataset(f"synthetic:{nodes},{5 * nodes},16,4", seed=0)
    rows = data.train_mask.nonzero().view(-1)
    return data, lambda out: loss_function(out[rows], data.y[rows])


def _model(name: str, data, hidden: int = 32):
    torch.manual_seed(0)
    sizes = {"hidden": hidden, **SIZES[name]}
    return build_model(name, data.num_features, 4, sizes.get("layers"), sizes["hidden"])


# the attention models keep weights and signs no config changes: on 600 nodes their budgets still mix configs
@pytest.mark.parametrize(
    "name, nodes", [*itertools.product(REFERENCE, [150, 600]), ("gatv2", 600), ("transformer", 600)]
)
def test_predicted_bytes_are_what_activation_memory_measures(name, nodes):
    data, loss = _graph(nodes)
    model = _model(name, data)
    with pytest.raises(iexact.PlanError) as refused:
        iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, budget=0, candidates=CANDIDATES, draws=1)
    smallest = refused.value.smallest
    assert f"the smallest keeps {smallest:,} B" in str(refused.value)
    mixed = 0
    for factor in (1.2, 1.5, 2, 4, 8):  # gatv2's budgets from 1.5x the smallest on are all 8 bits
        plan = iexact.plan_memory(
            model, data.x, data.edge_index, loss_fn=loss, budget=int(factor * smallest), candidates=CANDIDATES, draws=1
        )
        mixed += len({module.config for module in plan.modules}) > 1
        assert smallest < plan.bytes <= plan.budget
        measured = iexact.activation_memory(plan.apply_(copy.deepcopy(model)), data.x, data.edge_index).total
        assert plan.bytes == pytest.approx(measured, rel=0.05)
    assert mixed  # some plans give their modules different configs
    assert plan.fp32_bytes == iexact.activation_memory(model, data.x, data.edge_index).total


def test_the_smallest_budget_is_feasible_and_keeps_the_cheapest_config_everywhere():
    data, loss = _graph(300)
    model = _model("sage", data)
    with pytest.raises(iexact.PlanError) as refused:
        iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, budget=1000, candidates=CANDIDATES, draws=1)
    assert "no plan keeps the activations within 1,000 B" in str(refused.value)
    assert "FP32 keeps" in str(refused.value)
    plan = iexact.plan_memory(
        model, data.x, data.edge_index, loss_fn=loss, budget=refused.value.smallest, candidates=CANDIDATES, draws=1
    )
    assert plan.bytes == refused.value.smallest
    assert all(module.config.bits == 1 for module in plan.modules)
    measured = iexact.activation_memory(plan.apply_(copy.deepcopy(model)), data.x, data.edge_index).total
    assert measured == plan.bytes


def test_predicted_gradient_error_is_measured_and_beats_one_config_for_all():
    data, loss = _graph(2000)
    model = _model("sage", data, hidden=64)
    fp32 = iexact.activation_memory(model, data.x, data.edge_index).total
    state = torch.get_rng_state()
    plan = iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, budget=fp32 // 40, draws=8)
    assert torch.equal(torch.get_rng_state(), state) and not any(is_compressed(m) for m in model.modules())
    assert plan.uniform is not None and plan.gradient_error <= plan.uniform.gradient_error
    measured = iexact.gradient_error(plan.apply_(copy.deepcopy(model)), data.x, data.edge_index, loss_fn=loss, draws=8)
    assert measured.whole == pytest.approx(plan.gradient_error, rel=0.25)
    uniform = iexact.gradient_error(model, data.x, data.edge_index, loss_fn=loss, config=plan.uniform.config, draws=8)
    assert uniform.whole == pytest.approx(plan.uniform.gradient_error, rel=0.25)
    # a tighter budget costs accuracy: never a lower predicted error
    tighter = iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, budget=fp32 // 80, draws=8)
    assert tighter.bytes <= fp32 // 80 and tighter.gradient_error >= plan.gradient_error


def _best_by_brute_force(options, within: int, limit: float, minimized: int):
    """``(best total, check)`` over every choice whose total of field ``within``
    (0 bytes, 1 error) is at most ``limit``, the total of field ``minimized``
    least; ``check(picks)`` says a solver's picks are such a choice."""

    def total(picks, field):
        return sum(option[pick][field] for option, pick in zip(options, picks, strict=True))

    allowed = [p for p in itertools.product(*(range(len(o)) for o in options)) if total(p, within) <= limit]
    best = min((total(picks, minimized) for picks in allowed), default=None)
    return best, lambda picks: total(picks, within) <= limit and total(picks, minimized) == pytest.approx(best)


def test_the_knapsack_is_solved_exactly():
    """Least error within a byte capacity, and least bytes within an error cap, against brute force."""
    generator = random.Random(0)
    for _ in range(200):
        options = [
            [(generator.randrange(1, 50), generator.random()) for _ in range(generator.randrange(1, 5))]
            for _ in range(generator.randrange(1, 5))
        ]
        for solver, within, limit in (
            (least_error_within, 0, generator.randrange(0, 120)),
            (least_bytes_within, 1, generator.random() * len(options)),
        ):
            best, check = _best_by_brute_force(options, within, limit, 1 - within)
            picks = solver(options, limit)
            assert picks is None if best is None else check(picks)


def test_candidates_bad_budgets_and_explicit_levels():
    base = CompressionConfig(levels="uniform", projection="shared")
    grid = candidate_configs(base)
    assert grid[0] == base and len(grid) == len(set(grid)) == 64
    assert all(config.levels == "uniform" and config.projection == "shared" for config in grid)
    assert len(candidate_configs(CompressionConfig(block_size="row"))) == 65
    data, loss = _graph(150)
    model = _model("gcn", data)
    for budget in (-1, 1.5, 1e30):
        with pytest.raises(ValueError, match="budget must be a whole number of bytes"):
            iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, budget=budget)
    for max_error in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="max_error must be a finite number > 0"):
            iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, max_error=max_error)
    for targets in ({}, {"budget": 10**6, "max_error": 0.5}):
        with pytest.raises(ValueError, match="exactly one target: budget \\(bytes\\) or max_error"):
            iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, **targets)
    for arguments, message in (
        ({"base": "default"}, "base must be an iexact.CompressionConfig"),
        ({"loss_fn": None}, "loss_fn must be callable"),
    ):
        with pytest.raises(TypeError, match=message):
            iexact.plan_memory(model, data.x, data.edge_index, **{"loss_fn": loss, "budget": 10**6, **arguments})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        iexact.plan_memory("gcn", data.x, loss_fn=loss, budget=10**6)
    with pytest.raises(ValueError, match="explicit levels fix"):
        iexact.plan_memory(
            model, data.x, data.edge_index, loss_fn=loss, budget=10**6, base=CompressionConfig(levels=(0, 1, 2, 3))
        )
    with pytest.raises(ValueError, match="candidates must be"):
        iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, budget=10**6, candidates=[])


def test_configure_gives_modules_their_own_configs():
    data, loss = _graph(150)
    model = iexact.compress_(_model("sage", data), CompressionConfig())
    iexact.configure_(model, {"convs.1": CompressionConfig(bits=8)})
    assert model.convs[1].iexact_config.bits == 8 and model.convs[2].iexact_config.bits == 2
    with pytest.raises(
        ValueError,
        match="'convs.9' is no compressed module of this model; the compressed ones: "
        "dropout, act, convs.0, convs.1, convs.2",
    ):
        iexact.configure_(model, {"convs.9": CompressionConfig()})
    with pytest.raises(TypeError, match="must be an iexact.CompressionConfig"):
        iexact.configure_(model, {"convs.1": {"bits": 2}})
    assert model.convs[1].iexact_config.bits == 8  # nothing changed by a refused call
    with pytest.raises(ValueError, match="no module of it is"):
        iexact.gradient_error(_model("sage", data), data.x, data.edge_index, loss_fn=loss)


def test_a_fallback_module_is_planned_with_its_own_bits_and_no_projection():
    """The saved-tensor fallback's module takes the candidates' bits (at least 4), never a projection,
    and the bytes predicted for it are what it keeps."""
    from tests.nn.test_fallback import Attention

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), Attention(64), torch.nn.Linear(64, 4))
    x = torch.randn(600, 64)

    def loss(out):
        return out.square().mean()

    with pytest.raises(iexact.PlanError) as refused:
        iexact.plan_memory(model, x, loss_fn=loss, budget=0, candidates=CANDIDATES, draws=1)
    chosen = set()
    for factor in (1, 2, 4):
        plan = iexact.plan_memory(
            model, x, loss_fn=loss, budget=factor * refused.value.smallest, candidates=CANDIDATES, draws=1
        )
        (attention,) = [module for module in plan.modules if module.kind == "Attention"]
        assert attention.config.rp_ratio == 1 and attention.config.bits >= 4
        chosen.add(attention.config.bits)
        assert plan.bytes == iexact.activation_memory(plan.apply_(copy.deepcopy(model)), x).total
    assert chosen == {4, 8}


def test_an_error_target_gets_the_least_memory_measured_within_it():
    """With ``max_error`` the plan keeps less than any single config that is as
    accurate, and its gradient error, measured anew, is within the target."""
    data, loss = _graph(600)
    model = _model("sage", data)
    plan = iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, max_error=0.5, candidates=CANDIDATES)
    assert plan.budget is None and plan.max_error == 0.5 and plan.measured_error <= 0.5
    planned = plan.apply_(copy.deepcopy(model))
    assert plan.bytes == pytest.approx(iexact.activation_memory(planned, data.x, data.edge_index).total, rel=0.05)
    assert iexact.gradient_error(planned, data.x, data.edge_index, loss_fn=loss, draws=4).whole <= 0.5
    for config in CANDIDATES:  # every single config as small errs more
        uniform = iexact.compress_(copy.deepcopy(model), config)
        if iexact.activation_memory(uniform, data.x, data.edge_index).total < plan.bytes:
            assert iexact.gradient_error(uniform, data.x, data.edge_index, loss_fn=loss, draws=4).whole > 0.5
    with pytest.raises(iexact.PlanError, match="no plan was measured within a gradient error of 1e-06"):
        iexact.plan_memory(model, data.x, data.edge_index, loss_fn=loss, max_error=1e-6, candidates=CANDIDATES[:2])


def test_verification_corrects_underestimates_and_tightens_the_target():
    """Predictions that are low for one module (measured 4x) and for the
    whole (errors compounding, 1.5x the sum) are corrected until the
    measured plan is within the cap; a cap no plan meets gives None."""
    options = [[(1, 0.4), (2, 0.1), (4, 0.01)], [(1, 0.3), (2, 0.05), (4, 0.005)]]
    factor = {0: 4.0, 1: 1.0}

    def measure(module, option):
        return options_truth[module][option][1]

    def measure_whole(picks):
        return 1.5 * sum(options_truth[m][p][1] for m, p in enumerate(picks))

    options_truth = [[(b, e * factor[m]) for b, e in row] for m, row in enumerate(options)]
    picks, error = verified_least_bytes([list(row) for row in options], 0.5, measure, measure_whole)
    assert error <= 0.5 and error == measure_whole(picks)
    # the cheapest choice truly within 0.5 (both modules' noisier options compound over it)
    assert picks == (2, 1) and error == pytest.approx(1.5 * (0.04 + 0.05))
    assert verified_least_bytes([list(row) for row in options], 1e-4, measure, measure_whole) is None


class _Squares(torch.nn.Module):
    """No handler converts it: the saved-tensor fallback compresses the
    intermediate ``h`` that ``h * h`` saves (its input it keeps by reference)."""

    def __init__(self, channels):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(channels))

    def forward(self, x):
        h = x * self.scale
        return h * h


def test_a_fallback_modules_sensitivity_is_measured_at_the_config_its_noise_was():
    """A module under the fallback has its noise observed at its own config
    (8 bits, unprojected), so its sensitivity is measured there too: measured
    at the base's 2 bits with projection, every option of it was predicted
    far noisier than it measures (by four orders of magnitude here)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), _Squares(64), torch.nn.Linear(64, 4))
    x = torch.randn(400, 32)
    labels = torch.randint(0, 4, (400,))

    def loss(out):
        return torch.nn.functional.cross_entropy(out, labels)

    candidates = [CompressionConfig(bits=8, rp_ratio=1)]
    plan = iexact.plan_memory(model, x, loss_fn=loss, budget=10**9, candidates=candidates, draws=4)
    (squares,) = [module for module in plan.modules if module.kind == "_Squares"]
    planned = plan.apply_(copy.deepcopy(model))
    others = {module.name: candidates[0] for module in plan.modules if module is not squares}
    iexact.configure_(planned, others)  # the others at 8 bits too: the fallback's error alone
    alone = iexact.gradient_error(planned, x, loss_fn=loss, draws=4).whole ** 2
    assert squares.squared_error == pytest.approx(alone, rel=1.0)
