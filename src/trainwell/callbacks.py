"""Callbacks that ship with trainwell."""

from __future__ import annotations

import math
from typing import Any

import torch

from trainwell.errors import ConfigError
from trainwell.events import Callback, StopTraining


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs.

    As a callback it watches ``monitor`` in each epoch's metrics and restores the
    best weights at the end of ``fit()`` when ``restore_best``. Called directly,
    ``es(val_loss)`` returns True when training should stop (seed 001, pattern 2).
    """

    def __init__(
        self,
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
        monitor: str = "eval_loss",
        mode: str = "min",
    ):
        if patience < 1:
            raise ConfigError(f"patience must be at least 1, got {patience}")
        if min_delta < 0:
            raise ConfigError(f"min_delta must be >= 0, got {min_delta}")
        if mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.monitor = monitor
        self.mode = mode
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.counter = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta``."""
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def __call__(self, value: float) -> bool:
        """Record one epoch's value; True means stop."""
        if self.improved(value):
            self.best, self.counter = value, 0
            return False
        self.counter += 1
        return self.counter >= self.patience

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        monitor = self.monitor if self.monitor in metrics else "train_loss"
        value = metrics[monitor]
        if self.improved(value):
            self.best_epoch = trainer.epoch
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if self(value):
            raise StopTraining(
                f"early stopping: {monitor} has not improved"
                f"{f' by more than {self.min_delta:g}' if self.min_delta else ''} for {self.patience} epochs "
                f"(best {self.best:.4g} at epoch {self.best_epoch})"
            )

    def on_fit_end(self, trainer: Any, history: dict) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "counter": self.counter,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.counter = state["counter"]
        self.best_state = state["best_state"]
