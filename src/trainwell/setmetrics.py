"""Metrics that need every prediction of a set at once (R², NDCG): a callback a recipe adds.

The trainer's own meter keeps per-batch sums (loss, correct predictions); R² needs the
set's mean and NDCG a ranking of the whole list, which no per-batch sum gives. So this
callback scores the held-out items itself, once per epoch for validation and once for
the test set, and puts the numbers where the trainer's go:

- validation: into the ``EPOCH_END`` metrics dict, which the callbacks after it (the
  console table, the run directory's epoch record in metrics.jsonl) receive as the same
  object: a recipe's callbacks come before the built-in ones;
- test: into the ``{"kind": "test"}`` record as it is logged (this callback is a logger
  and precedes the run directory), so metrics.jsonl, summary.json and the report hold them.

It keeps no state of its own (it reads the model), so checkpoints and exact resume are
unaffected; it draws no random numbers. Under torchrun each process scores the whole
(small) set: the same numbers everywhere.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

MetricsFn = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]


class SetMetrics:
    """``compute(outputs, targets) -> {"name": value}`` on whole sets, logged as ``eval_<name>``
    (each epoch, on ``val``) and ``test_<name>`` (in the test record, on ``test``).

    ``val`` and ``test`` are ``(inputs, targets)`` tensors or None; ``outputs`` are the
    model's outputs for all the inputs (``Trainer.predict``: eval mode, on the CPU).
    """

    def __init__(self, compute: MetricsFn, val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 test: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.compute = compute
        self.sets = {"eval": val, "test": test}
        self._trainer: Any = None

    def on_fit_start(self, trainer: Any, **_: Any) -> None:
        self._trainer = trainer

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        if "eval_loss" in metrics:
            metrics.update(self.measure(trainer, "eval"))

    def log(self, record: dict[str, Any], step: int) -> None:
        """Add the test metrics to the test record as it goes by (``Trainer.test`` on the recipe's test set)."""
        if record.get("kind") == "test" and self._trainer is not None:
            record.update(self.measure(self._trainer, "test"))

    def measure(self, trainer: Any, prefix: str) -> dict[str, float]:
        """``compute`` on the ``prefix`` set ("eval" or "test"), its keys prefixed; ``{}`` without the set."""
        items = self.sets[prefix]
        if items is None or not len(items[0]):
            return {}
        outputs = trainer.predict(items[0])
        return {f"{prefix}_{name}": float(value) for name, value in self.compute(outputs, items[1].cpu()).items()}
