"""The constant-predictor baseline: what a regression's loss would be if the model learned nothing.

A validation MSE of 5.47 means little alone; next to 8.25 for always predicting the mean of
the targets it says the model explains only a third of the variance. The verdict compares
against this record (``{"kind": "baseline", ...}``), logged once per ``fit``.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from trainwell.data import InMemoryLoader, epoch_batches
from trainwell.metrics import classification_kind
from trainwell.runtime import to_device


class ConstantBaseline:
    """Logs the loss of predicting the targets' mean, with the trainer's own ``loss_fn``.

    Only for regression-like data (floating targets that are not a classifier's): for
    classes the verdict already has accuracy. Measured on the validation data (the mean
    of its targets: the best constant there), else on in-memory training data; a run
    with neither logs nothing. Logged at the first epoch's end, not at ``fit`` start: the
    run directory opens its files at ``fit`` start, after every earlier callback.
    """

    def __init__(self) -> None:
        self._data: Iterable | None = None
        self._split = ""
        self._done = False

    def on_fit_start(self, trainer: Any, train_data: Any = None, val_data: Any = None, **_: Any) -> None:
        self._done = False
        if val_data is not None:
            self._data, self._split = val_data, "validation"
        elif isinstance(train_data, InMemoryLoader):  # a second pass over other loaders costs a real epoch
            self._data, self._split = train_data, "training"
        else:
            self._data = None

    def on_epoch_end(self, trainer: Any, **_: Any) -> None:
        if self._done or self._data is None:
            return
        self._done = True
        loss = constant_loss(self._data, trainer.loss_fn, trainer.device)
        if loss is not None:
            trainer.log({"kind": "baseline", "step": trainer.step, "epoch": trainer.epoch, "split": self._split,
                         "predictor": "the mean of the targets", "loss": loss})


@torch.no_grad()
def constant_loss(data: Iterable, loss_fn: Any, device: torch.device) -> float | None:
    """Per-sample mean of ``loss_fn(mean of the targets, targets)`` over ``data``; None unless
    the targets are floating point and not binary labels for a BCE loss (and ``loss_fn`` is given)."""
    if loss_fn is None:
        return None
    batches = []
    for batch in epoch_batches(data, seed=0, epoch=0):  # a fixed order that leaves the global RNG alone
        targets = batch[1] if isinstance(batch, (tuple, list)) and len(batch) >= 2 else None
        if not isinstance(targets, torch.Tensor) or not targets.is_floating_point():
            return None
        if classification_kind(targets, targets, loss_fn) is not None:
            return None  # BCE on 0/1 labels: a classifier, judged by its accuracy
        batches.append(to_device(targets, device).float())
    if not batches:
        return None
    total = sum(len(t) for t in batches)
    mean = sum(t.sum(dim=0) for t in batches) / total
    return sum(float(loss_fn(mean.expand_as(t), t)) * len(t) for t in batches) / total
