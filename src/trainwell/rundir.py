"""The run directory: config.yaml, metrics.jsonl, checkpoints/, the weights, the curves and summary.json.

A callback the trainer adds (last, so every other callback's state is already updated
when a checkpoint is written) whenever ``run_dir`` is given. ``report.html`` is written
by the command line and by ``trainwell report RUN_DIR`` (rendering it takes a few seconds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainwell import checkpoint
from trainwell.errors import ConfigError
from trainwell.loggers import CsvLogger, JsonlLogger, TensorBoardLogger

FINAL_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "model-best.safetensors"
CONFIG = "config.yaml"
SUMMARY = "summary.json"
CURVES = "learning_curves.png"


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
        milestone_every_epochs: int | None = None,
        monitor: str = "eval_loss",
        tensorboard: bool = True,
        writes: bool = True,
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
        self.milestone_every = milestone_every_epochs
        self.monitor = monitor
        self.tensorboard = tensorboard
        self.writes = writes  # distributed: only the main process writes files; every one checkpoints with it
        self.best_value = math.inf
        self.best_checkpoint: str | None = None
        self.milestones: list[str] = []
        self.loggers: list = []

    # -- events

    def on_fit_start(self, trainer: Any, epochs: int, resume: Any = None, **_: Any) -> None:
        if not self.writes:
            return
        ensure_writable(self.checkpoints)
        if not (self.path / CONFIG).exists():  # a library run; the command line writes its own
            write_yaml(self.path / CONFIG, library_config(trainer, epochs))
        for leftover in self.checkpoints.glob(".*.tmp"):  # a write cut short by a crash
            leftover.unlink(missing_ok=True)
        fresh = trainer.step == 0 and trainer.epoch == 0 and trainer.position == 0
        if fresh and resume is None and any(self.checkpoints.glob("*.ckpt")):
            raise ConfigError(f"run directory {self.path} already holds a run; resume it (--resume, "
                              "resume='auto') or choose another run directory")
        self.close()

        def keep(record: dict) -> bool:  # what a resumed run will not write again
            if record.get("kind") == "epoch":
                return record["epoch"] <= trainer.epoch
            return record.get("kind") == "start" or record.get("step", 0) <= trainer.step

        self.loggers = [JsonlLogger(self.path / "metrics.jsonl", keep), CsvLogger(self.path / "epochs.csv", keep)]
        if self.tensorboard:
            self.loggers.append(TensorBoardLogger(self.path / "tensorboard", resume_step=trainer.step))

    def on_step_end(self, trainer: Any, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        if trainer.step % self.log_every == 0 and self.writes:
            record = {"kind": "step", "step": trainer.step, "epoch": trainer.epoch + 1, "loss": float(loss),
                      "lr": trainer.optimizer.param_groups[0]["lr"]}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            self.log(record, trainer.step)
        if self.every and trainer.step % self.every == 0:
            self.save_checkpoint(trainer)

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        is_best = value is not None and value < self.best_value
        self.log({"kind": "epoch", "step": trainer.step, "epoch": trainer.epoch, **metrics, "best": is_best},
                 trainer.step)
        name = _name(trainer.step)
        if is_best:
            self.best_value, self.best_checkpoint = value, name
            if self.writes:
                save_weights(trainer.model, self.path / BEST_WEIGHTS)
        if self.milestone_every and trainer.epoch % self.milestone_every == 0:
            self.milestones.append(name)
        self.save_checkpoint(trainer)

    def on_fit_end(self, trainer: Any, history: dict) -> None:
        from trainwell.plotting import plot_learning_curves

        if not self.writes:
            return
        save_weights(trainer.model, self.path / FINAL_WEIGHTS)
        # Close the CSV and TensorBoard writers (TensorBoard's flushes on a thread of its own);
        # metrics.jsonl stays open for the records written after fit, such as test metrics.
        for logger in self.loggers[1:]:
            logger.close()
        self.loggers = self.loggers[:1]
        plot_learning_curves(trainer.history, self.path / CURVES)
        update_summary(self.path, model=type(trainer.model).__name__, status=trainer.stop_reason or "completed",
                       epochs=trainer.epoch, steps=trainer.step)

    def log(self, record: dict[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log(record, step)
        if record.get("kind") == "test" and self.loggers:  # after fit: the summary holds the test metrics
            update_summary(self.path, **{k: v for k, v in record.items() if k != "kind"})

    # -- files

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []

    def save_checkpoint(self, trainer: Any, wait: bool = False) -> Path:
        """Checkpoint in the background; old ones are pruned once the new one is on disk."""
        return trainer.save_checkpoint(self.checkpoints / _name(trainer.step), wait=wait,
                                       then=lambda _: self._apply_retention())

    def _apply_retention(self) -> None:
        """Keep the newest ``keep_last``, the best and the milestones; delete the rest."""
        names = sorted(p.name for p in self.checkpoints.glob("*.ckpt"))
        keep = set(names[-self.keep_last :]) | {self.best_checkpoint} | set(self.milestones)
        for name in names:
            if name not in keep:
                for victim in (self.checkpoints / name, checkpoint.manifest_path(self.checkpoints / name)):
                    victim.unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_checkpoint": self.best_checkpoint,
                "milestones": list(self.milestones)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_checkpoint = state["best_value"], state["best_checkpoint"]
        self.milestones = list(state["milestones"])


def update_summary(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``run_dir/summary.json`` and refresh its health verdict (``"health"``:
    a list of findings, each ``{"code", "severity", "title", "evidence", "suggestion"}``)."""
    from trainwell.verdict import diagnose, findings_as_data, read_records

    path = run_dir / SUMMARY
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(fields)
    config = read_config(run_dir)
    summary["health"] = findings_as_data(diagnose(read_records(run_dir), config))
    checkpoint.atomic_write(path, lambda f: f.write(json.dumps(summary, indent=1).encode()))
    return summary


def library_config(trainer: Any, epochs: int) -> dict[str, Any]:
    """What a run started from Python was trained with, in the words of its arguments."""
    group = trainer.optimizer.param_groups[0]
    loss = trainer.loss_fn
    return {"model": type(trainer.model).__name__, "optimizer": type(trainer.optimizer).__name__,
            "lr": group["lr"], "weight_decay": group.get("weight_decay", 0.0),
            "loss_fn": None if loss is None else getattr(loss, "__name__", type(loss).__name__),
            "scheduler": _scheduler_name(trainer.scheduler), "grad_clip_norm": trainer.grad_clip_norm, "epochs": epochs,
            "precision": trainer.precision, "device": str(trainer.device), "seed": trainer.seed,
            "run_dir": str(trainer.run_dir)}


def _scheduler_name(spec: Any) -> str | None:
    from trainwell.schedules import parse_schedule_spec

    if spec is None or isinstance(spec, (str, tuple, Mapping)):
        return spec and parse_schedule_spec(spec)[0]
    return type(spec).__name__


def write_yaml(path: Path, values: dict[str, Any]) -> None:
    import yaml

    checkpoint.atomic_write(path, lambda f: f.write(yaml.safe_dump(values, sort_keys=False).encode()))


def read_config(run_dir: Path) -> dict[str, Any]:
    """``run_dir/config.yaml`` as a dict ({} when missing or unreadable)."""
    import yaml

    try:
        values = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def _name(step: int) -> str:
    return f"step-{step:09d}.ckpt"
