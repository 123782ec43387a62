r"""Full-batch node-classification training: the loop the accuracy results use."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Accuracies at the epoch of best validation accuracy, and that epoch."""

    best_epoch: int
    val_accuracy: float
    test_accuracy: float


def accuracy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of ``mask``ed nodes whose arg-max logit is the label."""
    return (logits[mask].argmax(-1) == labels[mask]).float().mean().item()


def train_full_batch(model: torch.nn.Module, data, epochs: int = 200, lr: float = 0.01,
                     weight_decay: float = 5e-4, grad_clip: float | None = None) -> TrainResult:
    r"""Train ``model(data.x, data.edge_index)`` with Adam and cross-entropy on
    ``data.train_mask``; evaluate in ``eval()`` mode after every epoch.

    Args:
        model (torch.nn.Module): compressed or not; trained in place.
        data: a PyG ``Data`` with ``x``, ``edge_index``, ``y`` and the three masks.
        epochs (int, optional): (default: :obj:`200`)
        lr (float, optional): (default: :obj:`0.01`)
        weight_decay (float, optional): (default: :obj:`5e-4`)
        grad_clip (float, optional): max gradient norm, or ``None``. (default: :obj:`None`)

    Returns:
        :class:`TrainResult` at the best validation epoch (the first, on ties).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    labels = data.y.view(-1)
    best = TrainResult(-1, -1.0, 0.0)
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data.x, data.edge_index)[data.train_mask], labels[data.train_mask])
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(data.x, data.edge_index)
        val = accuracy(logits, labels, data.val_mask)
        if val > best.val_accuracy:
            best = TrainResult(epoch, val, accuracy(logits, labels, data.test_mask))
    return best
