"""Model outputs for new inputs, with the trainer's device and precision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from trainwell.data import InMemoryLoader, call_model
from trainwell.runtime import to_device


@torch.no_grad()
def predict(trainer: Any, data: Any, batch_size: int = 1024) -> torch.Tensor:
    """Model outputs (logits) for a tensor of inputs or a loader of batches, on the CPU."""
    was_training = trainer.model.training
    trainer.model.eval()
    if isinstance(data, torch.Tensor):
        data = InMemoryLoader(data, batch_size=batch_size, shuffle=False)
    outputs = []
    for batch in data:
        inputs = to_device(batch if isinstance(batch, (torch.Tensor, Mapping)) else batch[0], trainer.device)
        with trainer._autocast:
            out = call_model(trainer.model, inputs)
        outputs.append(getattr(out, "logits", out).float().cpu())
    trainer.model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)
