"""Terminal output: a progress bar per epoch (only on a terminal) and seed 001's epoch table."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console

# Metrics some recipes add beside the loss (trainwell.setmetrics), in the order shown: (key, label, format).
EXTRA_METRICS = (("eval_mae", "Val MAE", "{:.4g}"), ("eval_r2", "Val R²", "{:.3f}"),
                 ("eval_pairwise_acc", "Val Pairwise Acc", "{:6.2%}"), ("eval_ndcg10", "Val NDCG@10", "{:.3f}"))


class ConsoleReporter:
    """Prints ``Epoch [1/5]  Train Loss … | Train Acc … / Val Loss … | Val Acc … ✓ best model saved``."""

    def __init__(self, console: Console | None = None, monitor: str = "eval_loss"):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.monitor = monitor
        self.best = math.inf
        self.epochs: int | None = None
        self._progress: Any = None
        self._task: Any = None
        self._refresh_every = 1
        self._last_lr: float | None = None

    def on_fit_start(self, trainer: Any, epochs: int, **_: Any) -> None:
        self.epochs = epochs

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        if not self.console.is_terminal or trainer.batches_per_epoch is None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs or '?'}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._task = self._progress.add_task("train", total=trainer.batches_per_epoch, completed=trainer.position)
        self._refresh_every = max(1, trainer.batches_per_epoch // 200)
        self._progress.start()

    def on_step_end(self, trainer: Any, **_: Any) -> None:
        if self._progress is not None and trainer.step % self._refresh_every == 0:
            self._progress.update(self._task, completed=trainer.position)

    def on_train_end(self, trainer: Any, metrics: dict) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        best = self._is_best(metrics)
        note = ("best model saved" if trainer.run_dir is not None else "best so far") if best else None
        self.console.print(epoch_line(trainer.epoch, self.epochs, metrics, note, previous_lr=self._last_lr))
        self._last_lr = metrics.get("lr", self._last_lr)

    def log(self, record: dict[str, Any], step: int) -> None:
        """Health-guard interventions and the trainer's notices (a resume, a skipped checkpoint) as they happen."""
        if record.get("kind") == "intervention":
            self.console.print(f"[yellow]! step {record['step']}: {record['cause']} -> {record['action']}[/yellow]")
        elif record.get("kind") == "notice":
            self.console.print(f"trainwell: {record['message']}", markup=False)

    def on_fit_end(self, trainer: Any, history: dict) -> None:
        if trainer.stop_reason:
            self.console.print(f"Stopped: {trainer.stop_reason}")

    def _is_best(self, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.monitor)
        if value is None or not value < self.best:
            return False
        self.best = value
        return True


def epoch_line(epoch: int, epochs: int | None, metrics: dict[str, float], note: str | None = None,
               previous_lr: float | None = None) -> str:
    """One row of the per-epoch table; it names the learning rate when it changed since the
    previous epoch (a schedule, a plateau cut or the health guard's back-off)."""
    parts = [f"Epoch [{epoch}/{epochs or '?'}]", f"Train Loss: {metrics['train_loss']:.4f}"]
    if "train_acc" in metrics:
        parts.append(f"| Train Acc: {metrics['train_acc']:6.2%}")
    if "eval_loss" in metrics:
        parts.append(f"/ Val Loss: {metrics['eval_loss']:.4f}")
    if "eval_acc" in metrics:
        parts.append(f"| Val Acc: {metrics['eval_acc']:6.2%}")
    parts += [f"| {label}: {form.format(metrics[key])}" for key, label, form in EXTRA_METRICS if key in metrics]
    lr = metrics.get("lr")
    if lr is not None and previous_lr is not None and lr != previous_lr:
        parts.append(f"| lr {lr:.4g}")
    parts.append(f"| {metrics.get('samples_per_sec', 0):,.0f} samples/s, {metrics.get('epoch_time', 0):.1f}s")
    if note:
        parts.append(f"[green]✓ {note}[/green]")
    return "  ".join(parts)
