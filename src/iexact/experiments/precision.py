r"""Mixed precision of a training step: ``--precision 32`` (float32), ``bf16``
(the forward under ``torch.autocast`` in bfloat16) or ``fp16`` (autocast in
float16, the loss scaled by a ``torch.amp.GradScaler``).

Every run of a bench shares the precision, so its FP32 row is the autocast
baseline: the memory ratio is against what a mixed-precision user keeps
today (bf16 activations, half of float32's), and the gradient error
against that model's gradient.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Each ``--precision`` and the dtype its forward autocasts to (``None``: none)."""


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward's context: ``torch.autocast`` to the precision's dtype on
    ``device``, or nothing for ``"32"``."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class StepPrecision:
    """How one training step runs its forward, backward and optimizer step
    in ``precision`` on ``device``: the forward under :func:`autocast`; for
    ``fp16`` the loss scaled and the step taken by a ``GradScaler`` (which
    skips a step whose gradients overflow and lowers the scale), the
    gradients unscaled before clipping."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is invalid: use one of {', '.join(PRECISIONS)}")
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def forward(self) -> contextlib.AbstractContextManager:
        """The context the forward and the loss run in."""
        return autocast(self.precision, self.device)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float | None) -> None:
        """``loss.backward()``, clipping every parameter's gradient to
        ``grad_clip`` in norm (``None``: none), then the optimizer step."""
        scaler = self.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        if grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict:
        """The scaler's state (its scale and growth tracker), for checkpoints; empty without one."""
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
