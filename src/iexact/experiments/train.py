r"""Node-classification training, full-batch or mini-batch: the loop behind ``iexact train`` and its accuracies."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..codec import NonFiniteError
from .batching import batch_loss_rows
from .data import graph_of
from .distributed import broadcast_buffers, parameter_spread
from .precision import StepPrecision


@dataclasses.dataclass
class TrainingState:
    """Where one run stands: epochs done, the best validation score so far and
    the test score at it, each epoch's validation score and training time in
    seconds, and in data-parallel runs the ranks' largest parameter difference
    after each epoch (:func:`~iexact.experiments.distributed.parameter_spread`)."""

    epoch: int = 0
    best_epoch: int = -1
    best_val: float = -1.0
    test_at_best: float = 0.0
    last_loss: float = float("nan")
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    val_history: list[float] = dataclasses.field(default_factory=list)
    rank_spread: list[float] = dataclasses.field(default_factory=list)  # data-parallel runs only


class TrainingFailed(RuntimeError):
    """Training stopped by what the data and settings lead to (named in the message)."""


class Diverged(TrainingFailed):
    """Training stopped: the loss, or an activation to compress, is NaN or Inf."""


class BatchTooSmall(TrainingFailed):
    """Training stopped: batch normalization met a batch of one node."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Scores at the epoch of best validation score (the first, on ties)."""

    best_epoch: int
    val_accuracy: float
    test_accuracy: float


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of ``mask``ed nodes whose arg-max logit is the label; for
    multi-label ``labels`` (N, L), the micro-averaged F1 of ``logits > 0``."""
    if labels.dim() == 2:
        predicted, truth = logits[mask] > 0, labels[mask] > 0.5
        hits = (predicted & truth).sum().item()
        denominator = predicted.sum().item() + truth.sum().item()
        return 2 * hits / denominator if denominator else 1.0
    return (logits[mask].argmax(-1) == labels[mask]).float().mean().item()


def loss_function(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, or binary cross-entropy for multi-label ``labels``."""
    if labels.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x,
    edge_index,
    labels: torch.Tensor,
    rows: torch.Tensor,
    grad_clip: float | None,
    precision: StepPrecision | None = None,
) -> float:
    """One optimizer step on the loss of output ``rows`` of ``model(x, edge_index)``;
    returns the loss. With no rows the loss is the output times 0, so the
    backward still runs (every rank of a data-parallel job must join it).
    ``precision``: the step's mixed precision (``None``: float32).

    Raises:
        Diverged: the loss is NaN or Inf, or an activation to compress is
            (the parameters are left as they were).
    """
    optimizer.zero_grad()
    precision = precision or StepPrecision("32", x.device)
    try:
        with precision.forward():
            out = model(x, edge_index)
            loss = loss_function(out[rows], labels[rows]) if rows.numel() else out.sum() * 0
    except NonFiniteError as error:
        raise Diverged(f"the activations are not finite: {error}") from error
    except ValueError as error:
        if "Expected more than 1 value per channel when training" not in str(error):
            raise
        raise BatchTooSmall(
            f"a batch of {x.size(0)} node(s) reached batch normalization, which needs 2 or more in training: "
            f"use a larger --batch-size"
        ) from None
    del out  # the logits: backward reads none of them, and (N, C) would stay alive through it
    value = loss.item()
    if not math.isfinite(value):
        raise Diverged(f"the training loss is {value}")
    precision.backward_and_step(loss, optimizer, grad_clip)
    return value


def labels_of(data) -> torch.Tensor:
    """``data.y`` as the loss takes it: ``(N,)`` classes, or ``(N, L)`` for multi-label data."""
    return data.y if data.y.dim() == 2 else data.y.view(-1)


def train_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data,
    state: TrainingState,
    epochs: int,
    grad_clip: float | None = None,
    after_epoch: Callable[[TrainingState], None] | None = None,
    loader=None,
    train_rows: torch.Tensor | None = None,
    before_epoch: Callable[[TrainingState], None] | None = None,
    precision: StepPrecision | None = None,
) -> TrainingState:
    r"""Continue training from ``state.epoch`` up to ``epochs``, then score
    validation and test nodes with a full-batch ``eval()`` pass under
    ``no_grad`` after every epoch. ``state`` is updated in place and passed
    to ``before_epoch`` and to ``after_epoch`` (progress, checkpoints).

    An epoch is one full-batch step on ``train_rows`` (default: the nodes of
    ``data.train_mask``), or, with ``loader`` (:func:`~iexact.experiments.batching.make_loader`),
    one step per batch on its :func:`~iexact.experiments.batching.batch_loss_rows`
    (``state.last_loss`` is then the epoch's mean batch loss). ``model`` may
    be wrapped in ``DistributedDataParallel``; scoring runs the module inside.
    ``precision`` is the steps' mixed precision (``None``: float32); scoring
    runs under its autocast too.

    Epoch time is the training alone (batch sampling, forward, backward,
    clipping, optimizer steps), with the device synchronized around it.
    """
    labels = labels_of(data)
    device = data.x.device
    precision = precision or StepPrecision("32", device)
    rows = data.train_mask.nonzero().view(-1) if train_rows is None else train_rows
    scored = getattr(model, "module", model)
    while state.epoch < epochs:
        if before_epoch is not None:
            before_epoch(state)
        model.train()
        _synchronize(device)
        start = time.perf_counter()
        try:
            state.last_loss = _train_epoch(model, optimizer, data, labels, rows, grad_clip, loader, precision)
        except Diverged as error:
            raise Diverged(f"diverged in epoch {state.epoch + 1}: {error} (is the learning rate too high?)") from error
        except BatchTooSmall as error:
            raise BatchTooSmall(f"stopped in epoch {state.epoch + 1}: {error}") from None
        _synchronize(device)
        state.epoch_seconds.append(time.perf_counter() - start)
        if isinstance(model, DistributedDataParallel):
            state.rank_spread.append(parameter_spread(scored))
            broadcast_buffers(scored)
        with precision.forward():
            val, test = _score(scored, data, labels)
        state.val_history.append(val)
        if val > state.best_val:
            state.best_epoch, state.best_val, state.test_at_best = state.epoch, val, test
        state.epoch += 1
        if after_epoch is not None:
            after_epoch(state)
    return state


def _train_epoch(model, optimizer, data, labels, rows, grad_clip, loader, precision) -> float:
    """One epoch's steps (one full-batch step, or one per batch of ``loader``); the mean loss."""
    if loader is None:
        return training_step(model, optimizer, data.x, graph_of(data), labels, rows, grad_clip, precision)
    losses = [
        training_step(
            model, optimizer, batch.x, batch.edge_index, labels_of(batch), batch_loss_rows(batch), grad_clip, precision
        )
        for batch in _on(loader, data.x.device)
    ]
    return sum(losses) / max(len(losses), 1)


def _score(model: torch.nn.Module, data, labels: torch.Tensor) -> tuple[float, float]:
    """Validation and test accuracy of a full-batch ``eval()`` pass under
    ``no_grad``; its logits are freed on return, before the next step."""
    model.eval()
    with torch.no_grad():
        logits = model(data.x, graph_of(data))
    return accuracy(logits, labels, data.val_mask), accuracy(logits, labels, data.test_mask)


def _on(loader, device: torch.device):
    """``loader``'s batches moved to ``device``."""
    for batch in loader:
        yield batch.to(device)


def train_full_batch(
    model: torch.nn.Module,
    data,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    grad_clip: float | None = None,
) -> TrainResult:
    r"""Train ``model(data.x, data.edge_index)`` from scratch with Adam.

    Args:
        model (torch.nn.Module): compressed or not; trained in place.
        data: a PyG ``Data`` with ``x``, ``edge_index``, ``y`` and the three masks.
        epochs (int, optional): (default: :obj:`200`)
        lr (float, optional): (default: :obj:`0.01`)
        weight_decay (float, optional): (default: :obj:`5e-4`)
        grad_clip (float, optional): max gradient norm, or ``None``. (default: :obj:`None`)

    Returns:
        :class:`TrainResult` at the best validation epoch.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    state = train_epochs(model, optimizer, data, TrainingState(), epochs, grad_clip)
    return TrainResult(state.best_epoch, state.best_val, state.test_at_best)
