"""The run directory: metrics.jsonl, checkpoints/, model.safetensors and the best weights.

A callback the trainer adds (last, so every other callback's state is already updated
when a checkpoint is written) whenever ``run_dir`` is given.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, IO

import torch

from trainwell import checkpoint
from trainwell.errors import ConfigError

FINAL_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "model-best.safetensors"


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Plain safetensors weights, loadable with ``safetensors.torch.load_file`` alone."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    checkpoint.atomic_write(path, lambda f: f.write(save(tensors, metadata={"format": "pt"})))


def ensure_writable(directory: Path) -> None:
    """ConfigError (before any training) when ``directory`` cannot be created or written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run directory {directory} is not writable ({e.strerror or e}); choose another with --run-dir") from e


class RunDirectory:
    """Writes a run's files as training goes; its own state (the best so far) is checkpointed."""

    def __init__(
        self,
        path: Path,
        checkpoint_every_steps: int | None = None,
        keep_last: int = 3,
        log_every_steps: int = 50,
        monitor: str = "eval_loss",
    ):
        if keep_last < 1:
            raise ConfigError(f"keep_checkpoints must be at least 1, got {keep_last}")
        if log_every_steps < 1:
            raise ConfigError(f"log_every_steps must be at least 1, got {log_every_steps}")
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.every = checkpoint_every_steps
        self.keep_last = keep_last
        self.log_every = log_every_steps
        self.monitor = monitor
        self.best_value = math.inf
        self.best_checkpoint: str | None = None
        self._log: IO[str] | None = None

    # -- events

    def on_fit_start(self, trainer: Any, **_: Any) -> None:
        ensure_writable(self.checkpoints)
        self._log = self._reopen_log(trainer)

    def on_step_end(self, trainer: Any, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        if trainer.step % self.log_every == 0:
            self.write({"step": trainer.step, "epoch": trainer.epoch + 1, "loss": float(loss),
                        "grad_norm": float(grad_norm), "lr": trainer.optimizer.param_groups[0]["lr"]})
        if self.every and trainer.step % self.every == 0:
            self.save_checkpoint(trainer)

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        is_best = value is not None and value < self.best_value
        self.write({"step": trainer.step, "epoch": trainer.epoch, "kind": "epoch", **metrics, "best": is_best})
        if is_best:
            self.best_value = value
            self.best_checkpoint = _name(trainer.step)
            save_weights(trainer.model, self.path / BEST_WEIGHTS)
        self.save_checkpoint(trainer)

    def on_fit_end(self, trainer: Any, history: dict) -> None:
        save_weights(trainer.model, self.path / FINAL_WEIGHTS)
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- files

    def write(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

    def save_checkpoint(self, trainer: Any) -> Path:
        path = trainer.save_checkpoint(self.checkpoints / _name(trainer.step))
        self._apply_retention()
        return path

    def _apply_retention(self) -> None:
        """Keep the newest ``keep_last`` and the best; never delete the newest valid one."""
        names = sorted(p.name for p in self.checkpoints.glob("*.ckpt"))
        keep = set(names[-self.keep_last :]) | {self.best_checkpoint}
        for name in names:
            if name not in keep:
                for victim in (self.checkpoints / name, checkpoint.manifest_path(self.checkpoints / name)):
                    victim.unlink(missing_ok=True)

    def _reopen_log(self, trainer: Any) -> IO[str]:
        """Open metrics.jsonl for appending, dropping records a resumed run will write again."""
        log_path = self.path / "metrics.jsonl"
        if log_path.exists():
            kept = [line for line in log_path.read_text().splitlines() if _still_valid(line, trainer)]
            checkpoint.atomic_write(log_path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))
        return open(log_path, "a", encoding="utf-8")

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_checkpoint": self.best_checkpoint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_checkpoint = state["best_value"], state["best_checkpoint"]


def _name(step: int) -> str:
    return f"step-{step:09d}.ckpt"


def _still_valid(line: str, trainer: Any) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False  # a line cut short by a crash
    if record.get("kind") == "epoch":
        return record["epoch"] <= trainer.epoch
    return record.get("step", 0) <= trainer.step

