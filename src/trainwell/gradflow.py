"""Per-layer gradient flow (seed 001's bonus): gradient norm, weight norm and the update/weight
ratio of every parameter tensor, every ``every`` optimizer steps, with each tensor's number of
dimensions (the verdict judges vanishing gradients on weight matrices, not on 1-D biases).

Cheap enough to leave on: one fused norm over all gradients and weights on the chosen
steps, plus a copy of the weights for the update ratio; nothing on the other steps.
"""

from __future__ import annotations

from typing import Any

import torch

from trainwell.statetree import copy_state
from trainwell.errors import ConfigError


class GradientFlow:
    """Logs a ``{"kind": "layers", ...}`` record every ``every`` steps."""

    def __init__(self, every: int = 100):
        if every < 1:
            raise ConfigError(f"grad_flow_every must be at least 1, got {every}")
        self.every = every
        self._pending: dict[str, Any] | None = None
        self._before: list[torch.Tensor] | None = None  # reused: the weights before the step

    def on_before_step(self, trainer: Any, **_: Any) -> None:
        if (trainer.step + 1) % self.every:
            return
        named = [(n, p) for n, p in trainer.model.named_parameters() if p.grad is not None]
        names = [n for n, _ in named]
        weights = [p.detach() for _, p in named]
        grad_norms = torch._foreach_norm([p.grad for _, p in named])
        self._before = copy_state(weights, reuse=self._before)
        self._pending = {"names": names, "grad_norms": grad_norms, "before": self._before, "weights": weights,
                         "ndim": {n: p.ndim for n, p in named}}

    def on_step_end(self, trainer: Any, **_: Any) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        weight_norms = torch._foreach_norm(pending["before"])
        torch._foreach_sub_(pending["before"], pending["weights"])  # now minus the update
        update_norms = torch._foreach_norm(pending["before"])
        table = torch.stack([torch.stack(pending["grad_norms"]), torch.stack(weight_norms),
                             torch.stack(update_norms)]).float().cpu().tolist()
        layers = {
            name: {"grad_norm": g, "weight_norm": w, "update_ratio": u / w if w > 0 else 0.0}
            for name, g, w, u in zip(pending["names"], *table)
        }
        trainer.log({"kind": "layers", "step": trainer.step, "epoch": trainer.epoch + 1, "layers": layers,
                     "ndim": pending["ndim"]})
