"""``CompressActivations`` with a real ``lightning.Trainer`` on CPU: a
GraphSAGE ``LightningModule`` trained full batch on a small random graph
(one batch per epoch). Skipped where Lightning is not installed (the
``lightning`` extra; CI installs it)."""

import warnings

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn.models import GraphSAGE

import iexact

lightning = pytest.importorskip("lightning")
from iexact.integrations.lightning import CompressActivations  # noqa: E402

NODES, FEATURES, CLASSES = 400, 16, 4


class NodeClassifier(lightning.LightningModule):
    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.model = GraphSAGE(FEATURES, 32, 2, CLASSES, dropout=dropout, norm="batch_norm")

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self.model(batch.x, batch.edge_index), batch.y)
        self.log("loss", loss, batch_size=1)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


class Recorder(lightning.pytorch.loggers.Logger):
    """Keeps what is logged."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, float] = {}

    name, version = "recorder", 0

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def _loader():
    generator = torch.Generator().manual_seed(0)
    data = Data(
        x=torch.randn(NODES, FEATURES, generator=generator),
        edge_index=torch.randint(0, NODES, (2, 8 * NODES), generator=generator),
        y=torch.randint(0, CLASSES, (NODES,), generator=generator),
    )
    return DataLoader([data], batch_size=1)


def _fit(module, callback, epochs, ckpt_path=None, precision="32-true", logger=None, save_to=None):
    """``Trainer.fit`` for ``epochs``; with ``save_to``, Lightning's own
    ``ModelCheckpoint`` writes ``last.ckpt`` there after every epoch."""
    saving = [] if save_to is None else [lightning.pytorch.callbacks.ModelCheckpoint(save_to, save_last=True)]
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[callback, *saving],
        logger=logger or False,
        precision=precision,
        enable_checkpointing=save_to is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|log_every_n_steps).*")
        trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_the_module_is_compressed_at_setup_and_its_memory_and_error_logged(precision):
    torch.manual_seed(0)
    module, logger = NodeClassifier(dropout=0.5), Recorder()
    trainer = _fit(module, CompressActivations(iexact.CompressionConfig()), 3, precision=precision, logger=logger)
    assert iexact.nn.is_compressed(module.model.convs[0])
    metrics = logger.metrics
    assert 0 < 10 * metrics["iexact/activation_bytes"] < metrics["iexact/uncompressed_activation_bytes"]
    assert 0 < logger.metrics["iexact/gradient_error"] < 2
    assert torch.isfinite(trainer.callback_metrics["loss"])


def test_a_resumed_fit_draws_the_noise_an_uninterrupted_one_draws(tmp_path):
    """No dropout, so the only randomness is the compression noise, which the
    checkpoint's seed streams carry: the resumed parameters are the
    uninterrupted ones bit for bit."""
    torch.manual_seed(0)
    whole = NodeClassifier()
    start = {name: value.clone() for name, value in whole.state_dict().items()}
    _fit(whole, CompressActivations(), 4)
    torch.manual_seed(0)
    part = NodeClassifier()
    part.load_state_dict(start)
    _fit(part, CompressActivations(), 2, save_to=tmp_path)
    torch.manual_seed(1)  # another process, say: what resumes must not depend on the global stream
    resumed = NodeClassifier()
    _fit(resumed, CompressActivations(), 4, ckpt_path=tmp_path / "last.ckpt")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_other_configs_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    _fit(NodeClassifier(), CompressActivations(measure=False), 1, save_to=tmp_path)
    four_bits = CompressActivations(iexact.CompressionConfig(bits=4), measure=False)
    with pytest.raises(ValueError, match="other iexact configs than the callback.s: saved .*INT2.*now .*INT4"):
        _fit(NodeClassifier(), four_bits, 2, ckpt_path=tmp_path / "last.ckpt")


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="config must be an iexact.CompressionConfig, got dict"):
        CompressActivations({"bits": 2})
    with pytest.raises(TypeError, match="plan must be an iexact.Plan"):
        CompressActivations(plan="plan.json")


def test_a_state_given_before_setup_is_applied_at_setup(tmp_path):
    """Whatever order Lightning calls the hooks in, a checkpoint's seed streams reach the module."""
    torch.manual_seed(0)
    module = NodeClassifier()
    _fit(module, CompressActivations(measure=False), 1, save_to=tmp_path)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]["CompressActivations"]
    fresh = CompressActivations(measure=False)
    fresh.load_state_dict(state)
    other = NodeClassifier()
    fresh.setup(None, other, "fit")
    assert [s.get_state().tolist() for s in iexact.nn.seed_streams(other)] == [
        s.tolist() for s in state["seed_streams"]
    ]


def test_the_finite_checks_are_read_once_per_step_and_a_non_finite_step_stops_the_fit(monkeypatch):
    from iexact.integrations import lightning as integration

    reads = []
    original = integration.finish_finite_checks
    monkeypatch.setattr(integration, "finish_finite_checks", lambda *a, **k: reads.append(1) or original(*a, **k))
    torch.manual_seed(0)
    _fit(NodeClassifier(), CompressActivations(measure=False), 3)
    assert reads == [1, 1, 1]  # one per training step (training_step calls self.model, not forward)

    class Poisoned(NodeClassifier):
        def training_step(self, batch, batch_idx):
            batch.x[0, 0] = float("nan")
            return super().training_step(batch, batch_idx)

    with pytest.raises(iexact.codec.NonFiniteError, match="holds NaN or Inf"):
        _fit(Poisoned(), CompressActivations(measure=False), 1)
