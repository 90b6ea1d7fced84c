"""The records a run starts and ends with in metrics.jsonl: what ran where, and how it ended."""

from __future__ import annotations

import time
from typing import Any, Iterable

from trainwell.data import InMemoryLoader


def start_record(trainer: Any, train_data: Iterable) -> dict[str, Any]:
    """Device, precision, size, where a resume picked the run up, and the memory estimate."""
    from trainwell import memory
    from trainwell.health import HealthGuard

    example = train_data.tensors[0][: train_data.batch_size] if isinstance(train_data, InMemoryLoader) else None
    return {"kind": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(trainer.device),
            "precision": trainer.precision, "step": trainer.step, "epoch": trainer.epoch,
            "num_params": sum(p.numel() for p in trainer.model.parameters()), "resumed_from": trainer.resumed_from,
            "health_guard": any(isinstance(cb, HealthGuard) for cb in trainer.callbacks),
            "memory": memory.estimate(trainer.model, trainer.optimizer, example)}


def end_record(trainer: Any, status: str, started: float) -> dict[str, Any]:
    """How ``fit`` ended ("completed", "early stopping: ...", "interrupted by SIGTERM", "failed: ...")."""
    return {"kind": "end", "status": status, "epochs": trainer.epoch, "steps": trainer.step,
            "wall_time_s": round(time.perf_counter() - started, 3)}
