"""One pass of the model over a validation or test set: per-sample mean loss and accuracy.

Out of memory, a loaded batch is scored again in evaluation batches of half the size
(kept for the rest of the run); the sums are per sample, so the result does not change.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from trainwell import oom
from trainwell.checks import check_dataset
from trainwell.data import evaluation_batches, split, unpack
from trainwell.errors import DataError
from trainwell.metrics import EpochMeter, accuracy_inputs, classification_kind


@torch.no_grad()
def evaluate(trainer: Any, dataloader: Iterable, prefix: str) -> dict[str, float]:
    """``{prefix}_loss`` (and ``_acc`` when classifying, ``_samples``) over the whole set, every process's."""
    was_training = trainer.model.training
    trainer.model.eval()
    meter = EpochMeter(trainer.device)
    name = "validation" if prefix == "eval" else prefix
    labels = check_dataset(dataloader, name)
    for index, batch in enumerate(evaluation_batches(dataloader, trainer.group)):
        batch = unpack(batch, trainer.device)
        scored = oom.retrying(lambda: [_score(trainer, part, index == 0 and i == 0, labels)
                                       for i, part in enumerate(split(batch, trainer.eval_micro_batch_size))],
                              lambda message: _halve(trainer, message, batch[2]))
        for loss, n, predicted, targets in scored:
            meter.add_batch(loss, n, predicted, targets)
    trainer.model.train(was_training)
    metrics = meter.result(prefix, trainer.group)
    if not metrics:
        raise DataError(f"the {name} data is empty")
    return metrics


def _score(trainer: Any, batch: tuple, check: bool, labels: torch.Tensor | None) -> tuple:
    """One evaluation micro-batch: (mean loss, samples, accuracy inputs, targets)."""
    inputs, targets, n = batch
    logits, loss = trainer._forward(inputs, targets, check=check, labels=labels)
    kind = trainer._kind or classification_kind(logits, targets, trainer.loss_fn)
    return loss, n, accuracy_inputs(kind, logits, trainer.loss_fn), targets


def _halve(trainer: Any, message: str, size: int) -> None:
    """Out of memory: score the batch again, and every later one, in evaluation batches of half the size."""
    trainer.eval_micro_batch_size = oom.halve(trainer, message, [size], trainer.eval_micro_batch_size,
                                              "evaluation batch")
