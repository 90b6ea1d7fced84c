"""Leslie Smith's learning-rate range test, run on a ``Trainer`` without leaving a trace.

The learning rate grows exponentially from ``min_lr`` to ``max_lr`` over exactly
``num_steps`` optimizer steps (both ends included), each step the trainer's own
``_train_step`` (so accumulation, clipping and bf16 behave as in training). The loss is
smoothed with a bias-corrected EMA (beta 0.98); the sweep stops early on a non-finite
loss or once the smoothed loss exceeds 4x its best. The suggestion is the learning rate
where the smoothed loss falls fastest against log(lr); a curve without a real descent
gets no suggestion ("no clear valley") rather than an invented number.

Afterwards the trainer is bitwise what it was (model, optimizer, scheduler, scaler,
counters, history, data position, every RNG, the gradients), also when the sweep raises.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from trainwell.data import InMemoryLoader, epoch_batches, windows
from trainwell.errors import ConfigError, DataError
from trainwell.events import Dispatcher
from trainwell.metrics import EpochMeter
from trainwell.runtime import place_on_device
from trainwell.schedules import ScheduleDriver

BETA = 0.98  # EMA smoothing of the loss (fastai's and torch-lr-finder's choice)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its best
MIN_DROP = 0.05  # a valley must be at least 5% of the starting loss deep to suggest anything
STEEPEST = "steepest descent of the smoothed loss"


@dataclass
class LRFindResult:
    """The range test's curve and suggestion.

    ``losses`` are the smoothed losses (what the suggestion is taken from), ``raw_losses``
    each step's window loss as measured; both pair with ``lrs``. ``suggestion`` is None when
    the curve shows no clear valley (``reason`` says why).
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None
    reason: str
    stopped_early: str | None = None  # why the sweep ended before num_steps, if it did
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``lr_find.json``."""
        return {"suggestion": self.suggestion, "reason": self.reason, "stopped_early": self.stopped_early,
                **self.settings, "lrs": self.lrs, "losses": self.losses, "raw_losses": self.raw_losses}

    def plot(self, path: str | os.PathLike) -> Path:
        """Smoothed (and raw) loss against the learning rate on a log axis, the suggestion marked."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        figure = Figure(figsize=(7, 4.2), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(self.lrs, self.raw_losses, color="0.75", linewidth=0.8, label="loss per step")
        axes.plot(self.lrs, self.losses, color="tab:blue", linewidth=1.8, label="smoothed loss (EMA 0.98)")
        if self.suggestion is not None:
            at = self.lrs.index(self.suggestion)
            axes.axvline(self.suggestion, color="tab:red", linestyle="--", linewidth=1)
            axes.plot([self.suggestion], [self.losses[at]], "o", color="tab:red",
                      label=f"suggested {self.suggestion:.2e}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate (log scale)")
        axes.set_ylabel("training loss")
        finite = [v for v in self.losses + self.raw_losses if math.isfinite(v)]
        if finite:  # keep the divergence from flattening the interesting part
            low, start = min(finite), self.losses[0]
            axes.set_ylim(low - 0.05 * abs(start - low + 1e-12), max(start, low) + 0.6 * abs(start - low) + 1e-12)
        title = f"LR range test: suggested {self.suggestion:.2e}" if self.suggestion is not None else \
            f"LR range test: {self.reason}"
        axes.set_title(title, fontsize=10)
        axes.legend(fontsize=8, loc="upper left")
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        return path


def lr_find(trainer: Any, train_data: Iterable, *, min_lr: float = 1e-7, max_lr: float = 10.0,
            num_steps: int = 100, accumulation_steps: int = 1) -> LRFindResult:
    """Run the range test on ``trainer`` with ``train_data``; the trainer is left exactly as it was.

    Every parameter group gets the same swept learning rate. Callbacks and loggers do not
    run during the sweep and the trainer's schedule does not move the learning rate; after
    it, one ``{"kind": "lr_find"}`` record goes to the trainer's loggers.
    """
    check_options(min_lr, max_lr, num_steps, accumulation_steps)
    if getattr(trainer, "group", None) is not None:
        raise ConfigError("lr_find runs in a single process: run it (or `trainwell lr-find`) without torchrun, "
                          "then train under torchrun with the learning rate it suggests")
    if isinstance(train_data, InMemoryLoader):
        place_on_device(train_data, trainer.device)
    lrs = [min_lr * (max_lr / min_lr) ** (i / (num_steps - 1)) for i in range(num_steps)]
    raw, stopped = _sweep_and_restore(trainer, train_data, lrs, accumulation_steps)
    smoothed = smooth(raw)
    suggestion, reason = suggest(lrs[: len(raw)], smoothed)
    settings = {"min_lr": min_lr, "max_lr": max_lr, "num_steps": num_steps, "steps_taken": len(raw),
                "accumulation_steps": accumulation_steps}
    result = LRFindResult(lrs[: len(raw)], smoothed, raw, suggestion, reason, stopped, settings)
    trainer.log({"kind": "lr_find", "suggestion": suggestion, "reason": reason, "stopped_early": stopped, **settings})
    return result


def check_options(min_lr: float, max_lr: float, num_steps: int, accumulation_steps: int = 1,
                  names: dict[str, str] | None = None) -> None:
    """ConfigError with one line for a sweep that cannot run; ``names``: how the user spelled each
    option (``--min-lr`` on the command line)."""
    called = {"min_lr": "min_lr", "max_lr": "max_lr", "num_steps": "num_steps",
              "accumulation_steps": "accumulation_steps", **(names or {})}
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{called[name]} must be a finite number above 0, got {value!r}")
    if min_lr >= max_lr:
        raise ConfigError(f"{called['min_lr']} ({min_lr:g}) must be below {called['max_lr']} ({max_lr:g})")
    for name, value, least in (("num_steps", num_steps, 2), ("accumulation_steps", accumulation_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            why = " (both ends of the sweep)" if name == "num_steps" else ""
            raise ConfigError(f"{called[name]} must be a whole number of at least {least}{why}, got {value!r}")


class _LossRecorder:
    """The sweep's only callback: the window loss of each step, before the update."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None

    def on_before_step(self, trainer: Any, loss: torch.Tensor, grad_norm: Any) -> None:
        self.loss = loss


def _sweep_and_restore(trainer: Any, data: Iterable, lrs: list[float],
                       accumulation_steps: int) -> tuple[list[float], str | None]:
    """The raw loss of each step at ``lrs[i]``; in every case the trainer is put back as it was."""
    attributes = dict(vars(trainer))  # every field, rebound ones (counters, flags, meter) included
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    grads = [p.grad for p in params]  # set aside untouched: the sweep starts from no gradients
    generators = _loader_generators(data)
    was_training = trainer.model.training
    recorder = _LossRecorder()
    snapshot = None
    try:
        trainer.events, trainer._loggers = Dispatcher([recorder]), []  # no user callback or logger fires
        trainer.lr_schedule = ScheduleDriver(None, trainer.optimizer, "epoch")  # the lr is the sweep's alone
        trainer._meter = EpochMeter(trainer.device)
        if trainer.scaler is not None:  # a copy steps; the trainer's own scaler is never touched
            scaler = torch.amp.GradScaler("cuda")
            scaler.load_state_dict(trainer.scaler.state_dict())
            trainer.scaler = scaler
        snapshot = copy.deepcopy(trainer.state_dict())  # copies: load_state_dict may adopt the tensors
        for p in params:
            p.grad = None
        if not trainer._train_checked:
            from trainwell.checks import check_dataset

            trainer._dataset_labels = check_dataset(data, "training")
        trainer.model.train()
        return _sweep(trainer, data, lrs, accumulation_steps, recorder)
    finally:
        if snapshot is not None:
            trainer.load_state_dict(snapshot)
        for name in set(vars(trainer)) - set(attributes):
            delattr(trainer, name)
        vars(trainer).update(attributes)
        for p, grad in zip(params, grads):
            p.grad = grad
        trainer.model.train(was_training)
        for generator, state in generators:
            generator.set_state(state)


def _sweep(trainer: Any, data: Iterable, lrs: list[float], accumulation_steps: int,
           recorder: _LossRecorder) -> tuple[list[float], str | None]:
    raw: list[float] = []
    average, best = 0.0, math.inf
    for index, window in enumerate(_windows_forever(trainer, data, accumulation_steps, len(lrs))):
        for group in trainer.optimizer.param_groups:
            group["lr"] = lrs[index]
        trainer._train_step(window)
        loss = float(recorder.loss)
        if not math.isfinite(loss):
            return raw, f"the loss became {loss} at lr {lrs[index]:.2e}"
        raw.append(loss)
        average = BETA * average + (1 - BETA) * loss
        smoothed = average / (1 - BETA ** (index + 1))
        best = min(best, smoothed)
        if index > 0 and smoothed > DIVERGED * best:
            return raw, f"the smoothed loss passed {DIVERGED:g}x its best at lr {lrs[index]:.2e}"
    return raw, None


def _windows_forever(trainer: Any, data: Iterable, accumulation_steps: int, steps: int):
    """``steps`` optimizer-step windows in the trainer's data order, starting at the trainer's
    epoch and going on to the next epochs when one epoch has too few."""
    epoch, given = trainer.epoch, 0
    while given < steps:
        empty = True
        for window in windows(epoch_batches(data, seed=trainer.data_seed, epoch=epoch, reuse=accumulation_steps),
                              accumulation_steps):
            empty = False
            yield window
            given += 1
            if given == steps:
                return
        if empty:
            raise DataError("the training data is empty: it yielded no batches")
        epoch += 1


def _loader_generators(data: Any) -> list[tuple[torch.Generator, torch.Tensor]]:
    """A DataLoader's own generators and their states: reading an epoch reseeds them."""
    found = [getattr(data, "generator", None), getattr(getattr(data, "sampler", None), "generator", None)]
    return [(g, g.get_state()) for g in found if isinstance(g, torch.Generator)]


def smooth(losses: list[float]) -> list[float]:
    """Bias-corrected exponential moving average (beta 0.98): the first values are not pulled to 0."""
    smoothed, average = [], 0.0
    for index, loss in enumerate(losses):
        average = BETA * average + (1 - BETA) * loss
        smoothed.append(average / (1 - BETA ** (index + 1)))
    return smoothed


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, str]:
    """(learning rate, how it was found) at the steepest descent of ``smoothed`` against log10(lr).

    The first ~10% (at most 10) and last ~5% (at most 5) points are ignored: the EMA's warm-up
    and the divergence. None when the rest is too short or does not fall by ``MIN_DROP``.
    """
    n = len(smoothed)
    first, last = min(10, max(1, n // 10)), n - min(5, max(1, n // 20))
    if last - first < 3:
        return None, f"no clear valley: only {n} steps before the loss diverged (lower min_lr or add steps)"
    slopes = np.gradient(np.asarray(smoothed[:last]), np.log10(lrs[:last]))[first:]
    steepest = first + int(np.argmin(slopes))
    start, low = smoothed[first], min(smoothed[first:last])
    if slopes[steepest - first] >= 0 or start - low < MIN_DROP * abs(start):
        drop = (start - low) / abs(start) if start else 0.0
        return None, f"no clear valley: the smoothed loss fell only {max(drop, 0):.1%} over the sweep"
    return lrs[steepest], STEEPEST
