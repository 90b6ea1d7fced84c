"""Per-epoch metrics kept on the device, read back once per epoch (no per-step host sync).

Losses are per-sample means over the whole set: each batch's mean loss is weighted by
its sample count, never averaged as a mean of batch means.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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


def correct_count(kind: str | None, logits: torch.Tensor, targets: torch.Tensor, loss_fn: Any) -> torch.Tensor | None:
    """How many predictions in the batch are right, as a device tensor."""
    if kind == "multiclass":
        return (logits.argmax(dim=-1) == targets).sum()
    if kind == "binary":
        threshold = 0.0 if isinstance(loss_fn, nn.BCEWithLogitsLoss) else 0.5
        predicted = logits.reshape(-1) > threshold
        return (predicted == (targets.reshape(-1) > 0.5)).sum()
    return None


class EpochMeter:
    """Running sums for one epoch: loss x samples, correct predictions, measured gradient norms."""

    def __init__(self, device: torch.device):
        # float32 sums: the losses and norms arrive as float32, and mixing dtypes costs a copy per step.
        dtype = torch.float32
        self.loss_sum = torch.zeros((), dtype=dtype, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.grad_norm_sum = torch.zeros((), dtype=dtype, device=device)
        self.grad_norm_max = torch.zeros((), dtype=dtype, device=device)
        self.samples = 0
        self.norms = 0  # steps whose gradient norm was measured
        self.has_accuracy = False

    def add_batch(self, loss: torch.Tensor, samples: int, correct: torch.Tensor | None) -> None:
        self.loss_sum.add_(loss.detach(), alpha=samples)
        self.samples += samples
        if correct is not None:
            self.correct.add_(correct)
            self.has_accuracy = True

    def add_grad_norm(self, grad_norm: torch.Tensor) -> None:
        self.grad_norm_sum.add_(grad_norm.detach())
        torch.maximum(self.grad_norm_max, grad_norm.detach(), out=self.grad_norm_max)
        self.norms += 1

    def result(self, prefix: str) -> dict[str, float]:
        """The epoch's means (one host sync)."""
        if self.samples == 0:
            return {}
        out = {f"{prefix}_loss": float(self.loss_sum) / self.samples}
        if self.has_accuracy:
            out[f"{prefix}_acc"] = int(self.correct) / self.samples
        if self.norms:
            out["grad_norm"] = float(self.grad_norm_sum) / self.norms
            out["grad_norm_max"] = float(self.grad_norm_max)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.cpu(),
            "correct": self.correct.cpu(),
            "grad_norm_sum": self.grad_norm_sum.cpu(),
            "grad_norm_max": self.grad_norm_max.cpu(),
            "samples": self.samples,
            "norms": self.norms,
            "has_accuracy": self.has_accuracy,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("loss_sum", "correct", "grad_norm_sum", "grad_norm_max"):
            getattr(self, name).copy_(state[name])
        self.samples, self.norms, self.has_accuracy = state["samples"], state["norms"], state["has_accuracy"]
