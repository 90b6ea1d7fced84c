"""The records a run starts and ends with in metrics.jsonl: what ran where, and how it ended."""

from __future__ import annotations

import time
from typing import Any, Iterable


def start_record(trainer: Any, train_data: Iterable) -> dict[str, Any]:
    """Device, precision, size, where a resume picked the run up, and the memory estimate."""
    from trainwell.health import HealthGuard

    return {"kind": "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(trainer.device),
            "precision": trainer.precision, "step": trainer.step, "epoch": trainer.epoch,
            "num_params": sum(p.numel() for p in trainer.model.parameters()), "resumed_from": trainer.resumed_from,
            "health_guard": any(isinstance(cb, HealthGuard) for cb in trainer.callbacks),
            "memory": memory_estimate(trainer, train_data)}


def memory_estimate(trainer: Any, train_data: Iterable) -> dict[str, int | None]:
    """The memory estimate a ``MemoryProbe`` made at the start of this fit, else a fresh one."""
    from trainwell import memory
    from trainwell.runtime import autocast

    probe = next((cb for cb in trainer.callbacks if isinstance(cb, memory.MemoryProbe)), None)
    if probe is not None and probe.estimated is not None:
        return probe.estimated
    inputs, targets = memory.example_batch(train_data, trainer.device)
    return memory.estimate(trainer.model, trainer.optimizer, inputs, targets=targets, loss_fn=trainer.loss_fn,
                           autocast=autocast(trainer.precision, trainer.device))


def end_record(trainer: Any, status: str, started: float) -> dict[str, Any]:
    """How ``fit`` ended ("completed", "early stopping: ...", "interrupted by SIGTERM", "failed: ...")."""
    return {"kind": "end", "status": status, "epochs": trainer.epoch, "steps": trainer.step,
            "wall_time_s": round(time.perf_counter() - started, 3)}
