"""Per-epoch metrics kept on the device, read back once per epoch (no per-step host sync).

Losses are per-sample means over the whole set: each batch's mean loss is weighted by
its sample count, never averaged as a mean of batch means. Each step only keeps its
loss and what accuracy needs (a small batch's class scores, or its predictions); the
sums, and one argmax over all the kept scores, are taken every ``FLUSH_EVERY`` batches in
a few batched operations, which costs a small model's step a fraction of what
comparing and summing every batch on its own would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FLUSH_EVERY = 64
# Class scores up to this many numbers per batch are kept for one batched argmax at the flush
# (64 batches of 64 x 10 logits: 160 KiB); larger outputs are reduced to predictions at once.
DEFERRED_SCORES = 1 << 16


def classification_kind(logits: torch.Tensor, targets: Any, loss_fn: Any) -> str | None:
    """``"multiclass"``, ``"binary"`` or None (regression, ranking: no accuracy)."""
    if not isinstance(targets, torch.Tensor):
        return None
    if logits.ndim >= 2 and logits.shape[-1] > 1 and not targets.is_floating_point():
        if targets.shape == logits.shape[:-1]:
            return "multiclass"
    if isinstance(loss_fn, (nn.BCEWithLogitsLoss, nn.BCELoss)) and logits.numel() == targets.numel():
        return "binary"
    return None


def predictions(kind: str | None, logits: torch.Tensor, loss_fn: Any) -> torch.Tensor | None:
    """The predicted classes (multiclass) or positives (binary, as booleans); None without accuracy."""
    if kind == "multiclass":
        return logits.argmax(dim=-1)
    if kind == "binary":
        threshold = 0.0 if isinstance(loss_fn, nn.BCEWithLogitsLoss) else 0.5
        return logits.reshape(-1) > threshold
    return None


def accuracy_inputs(kind: str | None, logits: torch.Tensor, loss_fn: Any) -> torch.Tensor | None:
    """What ``EpochMeter.add_batch`` keeps of a batch's outputs: a small multiclass batch's
    scores as ``[N, classes]`` (detached; their argmax is taken at the flush, one call for
    many batches), else ``predictions()``."""
    if kind == "multiclass" and logits.numel() <= DEFERRED_SCORES:
        scores = logits.detach()
        return scores if scores.ndim == 2 else scores.reshape(-1, scores.shape[-1])
    return predictions(kind, logits, loss_fn)


class EpochMeter:
    """Running sums for one epoch: loss x samples, correct predictions (one per sample, or one per
    position of a [batch, time, classes] output), measured gradient norms."""

    def __init__(self, device: torch.device):
        # float32 sums, like the losses and norms that arrive (pending losses are cast when folded in).
        dtype = torch.float32
        self.device = device
        self.loss_sum = torch.zeros((), dtype=dtype, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.grad_norm_sum = torch.zeros((), dtype=dtype, device=device)
        self.grad_norm_max = torch.zeros((), dtype=dtype, device=device)
        self.samples = 0
        self.resumed = 0  # samples restored from a checkpoint: trained before this process started
        self.trained = 0  # set by result(): the samples counted minus the resumed ones, over every process
        self.scored = 0  # predictions counted for accuracy: one per sample, or per position of a sequence
        self.norms = 0  # steps whose gradient norm was measured
        self._losses: list[torch.Tensor] = []  # not yet summed: per-batch mean losses,
        self._counts: list[int] = []  # their sample counts,
        self._predicted: list[torch.Tensor] = []  # and the predictions with their targets
        self._targets: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []  # measured gradient norms not yet folded in

    def add_batch(self, loss: torch.Tensor, samples: int, predicted: torch.Tensor | None = None,
                  targets: torch.Tensor | None = None) -> None:
        """One batch's mean loss (detached) and sample count, with ``accuracy_inputs()`` and targets
        for accuracy: floating-point ``predicted`` are class scores whose argmax is taken later."""
        self._losses.append(loss)
        self._counts.append(samples)
        self.samples += samples
        if predicted is not None:
            self._predicted.append(predicted)
            self._targets.append(targets)
            self.scored += targets.numel()
        if len(self._losses) >= FLUSH_EVERY:
            self._flush()

    def add_grad_norm(self, grad_norm: torch.Tensor) -> None:
        """One measured gradient norm (a 0-d tensor without autograd history), summed at the flush."""
        self._norms.append(grad_norm)
        self.norms += 1

    def _flush(self) -> None:
        """Fold the pending batches into the sums."""
        if self._losses:
            losses = torch.stack(self._losses).float()
            counts = torch.tensor(self._counts, dtype=losses.dtype).to(losses.device, non_blocking=True)
            self.loss_sum.add_(torch.dot(losses, counts))
            self._losses, self._counts = [], []
        self._fold_norms()
        self._count_correct()

    def _fold_norms(self) -> None:
        """Fold the pending gradient norms into their sum and maximum (order fixed: exact on resume)."""
        if self._norms:
            norms = torch.stack(self._norms).float()
            self.grad_norm_sum.add_(norms.sum())
            torch.maximum(self.grad_norm_max, norms.max(), out=self.grad_norm_max)
            self._norms = []

    def _count_correct(self) -> None:
        """Fold the pending predictions into ``correct`` (integer sums: when does not matter)."""
        if self._predicted:
            scores = [p for p in self._predicted if p.is_floating_point()]
            if len(scores) == len(self._predicted):  # the usual case: one argmax for every batch
                predicted = torch.cat(scores).argmax(dim=-1)
            else:
                predicted = torch.cat([p.argmax(dim=-1) if p.is_floating_point() else p.reshape(-1)
                                       for p in self._predicted])
            targets = torch.cat([t if t.ndim == 1 else t.reshape(-1) for t in self._targets])
            if predicted.dtype == torch.bool:
                targets = targets > 0.5
            self.correct.add_((predicted == targets).sum())
            self._predicted, self._targets = [], []

    def result(self, prefix: str, group: Any = None) -> dict[str, float]:
        """The epoch's means, ``{prefix}_samples`` with them (one host sync); ``{}`` when nothing was
        counted. Distributed (``group``): the sums of every process, in one all-reduce."""
        self._flush()
        sums = [float(self.loss_sum), int(self.correct), self.samples, self.scored, self.resumed]
        if group is not None:
            sums = group.sum(torch.tensor(sums, dtype=torch.float64, device=self.device)).tolist()
        loss_sum, correct, samples, scored, resumed = sums
        if samples == 0:
            return {}
        self.trained = int(samples - resumed)  # what this run (every process) trained, for its throughput
        out = {f"{prefix}_loss": loss_sum / samples, f"{prefix}_samples": int(samples)}
        if scored:
            out[f"{prefix}_acc"] = int(correct) / scored
        if self.norms:  # the same on every process: measured on the summed gradients
            out["grad_norm"] = float(self.grad_norm_sum) / self.norms
            out["grad_norm_max"] = float(self.grad_norm_max)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The sums as plain numbers (exact: float32 fits a Python float), plus the losses and
        gradient norms not yet summed: summing them now would change the float rounding of
        the epoch's means, and a resumed run must report the same numbers."""
        self._count_correct()
        return {
            "loss_sum": float(self.loss_sum),
            "correct": int(self.correct),
            "grad_norm_sum": float(self.grad_norm_sum),
            "grad_norm_max": float(self.grad_norm_max),
            "samples": self.samples,
            "norms": self.norms,
            "scored": self.scored,
            "pending_losses": torch.stack(self._losses).tolist() if self._losses else [],
            "pending_counts": list(self._counts),
            "pending_norms": torch.stack(self._norms).tolist() if self._norms else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("loss_sum", "correct", "grad_norm_sum", "grad_norm_max"):
            getattr(self, name).fill_(state[name])
        self.samples, self.norms = state["samples"], state["norms"]
        self.resumed = self.samples  # counted by the process that saved them, not by this one
        # Checkpoints before per-position counting kept a flag: one prediction per sample.
        self.scored = state.get("scored", self.samples if state.get("has_accuracy") else 0)
        losses = torch.tensor(state["pending_losses"], dtype=torch.float32, device=self.device)
        self._losses = list(losses.unbind())
        self._counts = list(state["pending_counts"])
        norms = torch.tensor(state.get("pending_norms", []), dtype=torch.float32, device=self.device)
        self._norms = list(norms.unbind())
        self._predicted, self._targets = [], []
