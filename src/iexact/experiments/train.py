r"""Full-batch node-classification training: the loop behind ``iexact train`` and the accuracy results."""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class TrainingState:
    """Where one run stands: epochs done, the best validation score so far and
    the test score at it, each epoch's validation score and training time in seconds."""

    epoch: int = 0
    best_epoch: int = -1
    best_val: float = -1.0
    test_at_best: float = 0.0
    last_loss: float = float("nan")
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    val_history: list[float] = dataclasses.field(default_factory=list)


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


def train_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data, state: TrainingState,
                 epochs: int, grad_clip: float | None = None,
                 after_epoch: Callable[[TrainingState], None] | None = None) -> TrainingState:
    r"""Continue training from ``state.epoch`` up to ``epochs``: one full-batch
    step on ``data.train_mask`` per epoch, then an ``eval()`` pass scoring
    validation and test nodes. ``state`` is updated in place and passed to
    ``after_epoch`` (progress, checkpoints) after every epoch.

    Epoch time is the training step alone (forward, backward, clipping,
    optimizer step), with the device synchronized around it.
    """
    labels = data.y if data.y.dim() == 2 else data.y.view(-1)
    device = data.x.device
    while state.epoch < epochs:
        model.train()
        _synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_function(model(data.x, data.edge_index)[data.train_mask], labels[data.train_mask])
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        _synchronize(device)
        state.epoch_seconds.append(time.perf_counter() - start)
        state.last_loss = loss.item()
        model.eval()
        with torch.no_grad():
            logits = model(data.x, data.edge_index)
        val = accuracy(logits, labels, data.val_mask)
        state.val_history.append(val)
        if val > state.best_val:
            state.best_epoch, state.best_val = state.epoch, val
            state.test_at_best = accuracy(logits, labels, data.test_mask)
        state.epoch += 1
        if after_epoch is not None:
            after_epoch(state)
    return state


def train_full_batch(model: torch.nn.Module, data, epochs: int = 200, lr: float = 0.01,
                     weight_decay: float = 5e-4, grad_clip: float | None = None) -> TrainResult:
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
