"""The training progress bar of the ``iexact`` command (tqdm, on stderr)."""

from __future__ import annotations

from tqdm.auto import tqdm

from .train import TrainingState


class Progress:
    """One tqdm bar per run: epochs done, last loss and best validation score."""

    def __init__(self, label: str, epochs: int, runs: int, enabled: bool = True):
        self.label, self.epochs, self.runs, self.enabled = label, epochs, runs, enabled
        self.bar: tqdm | None = None
        self.run: int | None = None

    def __call__(self, run: int, state: TrainingState) -> None:
        if not self.enabled:
            return
        if run != self.run or self.bar is None:
            self.close()
            self.run = run
            self.bar = tqdm(
                total=self.epochs,
                initial=state.epoch - 1,
                unit="epoch",
                dynamic_ncols=True,
                desc=f"{self.label} run {run + 1}/{self.runs}",
            )
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{state.last_loss:.4f}", best_val=f"{100 * state.best_val:.1f}%", refresh=False)
        if state.epoch == self.epochs:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
