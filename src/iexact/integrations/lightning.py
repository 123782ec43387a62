r"""A Lightning callback that compresses a ``LightningModule``'s activations.

.. code-block:: python

    import lightning as L
    from iexact import CompressionConfig
    from iexact.integrations.lightning import CompressActivations

    trainer = L.Trainer(callbacks=[CompressActivations(CompressionConfig())], precision="bf16-mixed")
    trainer.fit(module, loaders)

At ``setup`` the callback converts the module in place (:func:`iexact.compress_`,
or a :class:`~iexact.Plan` made for the module, its names as
``module.named_modules()`` gives them). At the first training batch it
measures, on a copy of the module and without touching the random streams
training draws from, the activation memory one training step keeps against
the uncompressed module's and the gradient error
(:func:`iexact.gradient_error`), and logs them to the trainer's loggers as
``iexact/activation_bytes``, ``iexact/uncompressed_activation_bytes`` and
``iexact/gradient_error``. Under a mixed ``precision`` both run under the
trainer's autocast, so the baseline is the module as the user trains it.

The finite checks of a training step's compressions (``check_finite``) are
read once, before its backward (:mod:`iexact.nn.finite_checks`; a
``training_step`` need not go through the module's ``forward``).

Checkpoints keep the configs, the seed streams (each compressed module's
noise) and fitted levels, so a ``Trainer.fit(..., ckpt_path=...)`` resumes
drawing the noise an uninterrupted fit would have drawn; a checkpoint made
with other configs is refused by name.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any, cast

import torch

from ..analysis import calibration_state, gradient_error, load_calibration_state_
from ..config import CompressionConfig
from ..memory import activation_memory
from ..nn import compress_, module_configs, restore_, seed_streams
from ..ops.codec import finish_finite_checks, start_finite_checks
from ..planning import Plan

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        'iexact.integrations.lightning needs Lightning: pip install "iexact[lightning]" (lightning >= 2.4)'
    ) from error


class _TrainingStep(torch.nn.Module):
    """``module.training_step(batch, batch_index)``'s loss as a forward, for
    :func:`iexact.activation_memory` and :func:`iexact.gradient_error`."""

    def __init__(self, module: pl.LightningModule, batch_index: int):
        super().__init__()
        self.module, self.batch_index = module, batch_index

    def forward(self, batch) -> torch.Tensor:
        output = self.module.training_step(batch, self.batch_index)
        loss = output.get("loss") if isinstance(output, Mapping) else output
        if not isinstance(loss, torch.Tensor):
            raise TypeError("training_step returned no loss (manual optimization?)")
        return loss


class CompressActivations(pl.Callback):
    """Convert the trained ``LightningModule`` at ``setup``, log what it keeps, checkpoint its noise.

    Args:
        config (CompressionConfig, optional): the compression; ignored with
            ``plan``. (default: ``CompressionConfig()``)
        plan (Plan, optional): a per-module plan (:func:`iexact.plan_memory`)
            made for this module. (default: :obj:`None`)
        measure (bool, optional): measure and log the memory and the gradient
            error at the first training batch. (default: :obj:`True`)
        draws (int, optional): compressed backward passes of the gradient
            error. (default: :obj:`4`)
    """

    def __init__(
        self,
        config: CompressionConfig | None = None,
        plan: Plan | None = None,
        measure: bool = True,
        draws: int = 4,
    ):
        if config is not None and not isinstance(config, CompressionConfig):
            raise TypeError(f"config must be an iexact.CompressionConfig, got {type(config).__name__}")
        if plan is not None and not isinstance(plan, Plan):
            raise TypeError(f"plan must be an iexact.Plan, got {type(plan).__name__}")
        self.config = config or CompressionConfig()
        self.plan, self.measure, self.draws = plan, measure, draws
        self.module: pl.LightningModule | None = None
        self.measured: dict[str, float] | None = None
        self.pending: dict[str, Any] = {}  # a checkpoint's state given before setup, applied there
        self.checks: Any = None  # the open collection of a training step's finite checks (its token)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.module is pl_module:
            return  # fit after validate, or a second fit: converted once
        if self.plan is not None:
            self.plan.apply_(pl_module)
        else:
            compress_(pl_module, self.config)
        self.module = pl_module
        if self.pending:
            self.load_state_dict(self.pending)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.measure and self.measured is None:
            self.measured = self._measurements(pl_module, batch, batch_idx, trainer.precision_plugin.forward_context())
            for logger in trainer.loggers:
                logger.log_metrics(self.measured, step=trainer.global_step)
        self.checks = start_finite_checks()  # training_step need not call forward: the step collects them

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._finish_checks(raising=True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        self._finish_checks(raising=True)  # a step without backward (training_step returned None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish_checks(raising=False)

    def _finish_checks(self, raising: bool) -> None:
        """Read the step's finite checks once (:mod:`iexact.nn.finite_checks`), raising for a non-finite tensor."""
        token, self.checks = self.checks, None
        if token is not None:
            finish_finite_checks(token, raising=raising)

    def _measurements(self, pl_module, batch, batch_idx: int, precision_context) -> dict[str, float]:
        """Memory and gradient error of one training step on ``batch``, measured
        on copies under the random streams' current state, then restored, in
        ``precision_context`` (the trainer's autocast)."""
        device = _cuda_device(pl_module)
        with (
            torch.random.fork_rng(devices=[] if device is None else [device]),
            warnings.catch_warnings(),
            precision_context,
        ):
            warnings.simplefilter("ignore")  # the copies' self.log() calls, outside the trainer's loop
            twin = copy.deepcopy(pl_module)
            step = _TrainingStep(twin, batch_idx)
            kept = activation_memory(step, batch).total
            plain = cast(pl.LightningModule, restore_(copy.deepcopy(twin)))
            uncompressed = activation_memory(_TrainingStep(plain, batch_idx), batch).total
            error = gradient_error(step, batch, loss_fn=lambda loss: loss, draws=self.draws)
        return {
            "iexact/activation_bytes": float(kept),
            "iexact/uncompressed_activation_bytes": float(uncompressed),
            "iexact/gradient_error": error.whole,
        }

    def state_dict(self) -> dict[str, Any]:
        module = self.module
        if module is None:
            return {}
        return {
            "configs": {name: config.to_dict() for name, config in module_configs(module).items()},
            "seed_streams": [stream.get_state() for stream in seed_streams(module)],
            "levels": calibration_state(module),
            "measured": self.measured,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        module = self.module
        if module is None:  # before setup: kept until the module is converted
            self.pending = state_dict
            return
        self.pending = {}
        if not state_dict:
            return
        saved = {name: CompressionConfig.from_dict(record) for name, record in state_dict["configs"].items()}
        if saved != module_configs(module):
            raise ValueError(
                "this checkpoint was made with other iexact configs than the callback's: "
                f"saved {_summary(saved)}, now {_summary(module_configs(module))}"
            )
        streams = seed_streams(module)
        if len(streams) != len(state_dict["seed_streams"]):
            raise ValueError(f"{len(state_dict['seed_streams'])} seed streams saved, the module has {len(streams)}")
        for stream, state in zip(streams, state_dict["seed_streams"], strict=True):
            stream.set_state(state)
        load_calibration_state_(module, state_dict["levels"])
        self.measured = state_dict["measured"]


def _cuda_device(module: torch.nn.Module) -> torch.device | None:
    device = next((p.device for p in module.parameters()), None)
    return device if device is not None and device.type == "cuda" else None


def _summary(configs: dict[str, CompressionConfig]) -> str:
    distinct = sorted({str(config) for config in configs.values()})
    return f"{len(configs)} module(s): " + "; ".join(distinct)
