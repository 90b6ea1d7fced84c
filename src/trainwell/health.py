"""The health guard: catch a bad step before it is applied, heal, and give up only with a diagnosis.

Before each optimizer step it looks at the window's loss and the gradient norm:

- non-finite loss or gradients, or a loss spike (far above the robust recent level,
  and by a real share of the starting loss) -> the step is skipped (its gradients dropped);
- if the weights themselves are damaged (non-finite), or the spike says the last
  updates went wrong, -> the model and optimizer roll back to the last good snapshot;
- the learning rate is backed off by ``lr_factor``, then eases back to its schedule over
  ``recovery_steps`` quiet steps (a one-off bad batch should not slow the whole run);
- more than ``max_interventions`` within ``window`` steps -> stop with a TrainingError
  that says what happened, what was tried, and where the last good checkpoint is.

Reading the loss costs one host sync per step; on a GPU that is the price of
never applying a NaN update.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import torch

from trainwell.statetree import copy_state
from trainwell.errors import ConfigError, TrainingError
from trainwell.events import SkipStep

# A batch loss this many robust deviations above the recent median is not noise.
SPIKE_MADS = 20.0
# ...and it must also be this many times the median (tiny MADs late in training).
SPIKE_RATIO = 8.0
# Early on, before a window of history exists, only a jump this large counts.
EARLY_SPIKE_RATIO = 20.0
EARLY_HISTORY = 10
# ...and it must rise by this share of the run's starting loss level. Late in a long run the
# median batch loss is ~0.005 and one confidently wrong sample lifts a batch of 64 to 0.2-0.4:
# that is a hard example, not a divergence (54k MNIST images, 22 epochs: 58 false alarms
# with a tenth, none with a half).
SPIKE_FLOOR = 0.5
# The robust level moves slowly; recomputing it every few steps keeps the check cheap
# (two sorts of the 100 kept losses: done every 10 steps they cost about 5k instructions,
# ~2 µs, per step as counted with callgrind; every 25, about 2k).
REFRESH_EVERY = 25


class HealthGuard:
    """Detects non-finite values and loss spikes before each step; skips, rolls back, backs off, or stops."""

    def __init__(
        self,
        lr_factor: float = 0.5,
        max_interventions: int = 5,
        window: int = 200,
        snapshot_every: int = 100,
        recovery_steps: int = 100,
        history: int = 100,
    ):
        if not 0 < lr_factor <= 1:
            raise ConfigError(f"lr_factor must be in (0, 1], got {lr_factor}")
        if min(max_interventions, window, snapshot_every, recovery_steps) < 1:
            raise ConfigError("max_interventions, window, snapshot_every and recovery_steps must be at least 1")
        self.lr_factor = lr_factor
        self.max_interventions = max_interventions
        self.window = window
        self.snapshot_every = snapshot_every
        self.recovery_rate = (1 / lr_factor) ** (1 / recovery_steps)
        self.losses: deque[float] = deque(maxlen=history)
        self.interventions: list[dict[str, Any]] = []
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_step = 0
        self.level: tuple[float, float] | None = None  # (median, threshold), refreshed every few steps
        self.start_level: float | None = None  # median of the first accepted losses: the loss scale
        self.since_update = 0
        self._trainer: Any = None  # the trainer whose state the snapshot copies
        self._train_data: Any = None  # this fit's training data (a curriculum's pool size)

    # -- events

    def on_fit_start(self, trainer: Any, train_data: Any = None, **_: Any) -> None:
        self._trainer, self._train_data = trainer, train_data
        if self.snapshot is None:
            self._take_snapshot(trainer)

    def on_epoch_start(self, trainer: Any, epoch: int, **_: Any) -> None:
        # A curriculum that widens its pool brings in harder samples: their loss is the new normal,
        # not a spike, so the recent level is learned again (at the epoch's start only: resume stays exact).
        pool = getattr(self._train_data, "pool_size", None)
        if callable(pool) and epoch > 0 and trainer.position == 0 and pool(epoch) > pool(epoch - 1):
            self.losses.clear()
            self.level = None

    def on_before_step(self, trainer: Any, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        if self.snapshot is None:  # restored outside fit: the weights are still the restored ones
            self._trainer = trainer
            self._take_snapshot(trainer)
        if grad_norm is None:  # not measured this step: the loss alone (damaged weights show up next step)
            loss_value, norm_value = float(loss), 0.0
        else:
            loss_value, norm_value = float(loss), float(grad_norm)
        if trainer.scaler is not None and math.isfinite(loss_value) and not math.isfinite(norm_value):
            return  # float16 overflow: the GradScaler skips this step and lowers its scale itself
        cause = self._diagnose(loss_value, norm_value)
        if cause is None:
            self.losses.append(loss_value)
            if trainer.step - self.snapshot_step >= self.snapshot_every:
                self._take_snapshot(trainer)  # these weights just gave a healthy loss: a good state
            return
        self._intervene(trainer, cause, spike=cause.startswith("loss spike"))
        raise SkipStep(cause)

    def on_step_end(self, trainer: Any, **_: Any) -> None:
        schedule = trainer.lr_schedule
        if schedule.lr_scale < 1:  # ease a back-off out, one quiet step at a time
            schedule.scale_lr(min(1.0, schedule.lr_scale * self.recovery_rate) / schedule.lr_scale)

    # -- decisions

    def _diagnose(self, loss: float, grad_norm: float) -> str | None:
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if not math.isfinite(grad_norm):
            return f"non-finite gradients (norm {grad_norm})"
        if not self.losses:
            return None
        if self.level is None or len(self.losses) <= EARLY_HISTORY or self.since_update >= REFRESH_EVERY:
            self.level, self.since_update = self._spike_level(), 0
        self.since_update += 1
        median, threshold = self.level
        if median > 0 and loss > threshold:
            return f"loss spike ({loss:.4g}, {loss / median:.1f}x the recent median {median:.4g})"
        return None

    def _spike_level(self) -> tuple[float, float]:
        """(recent median, spike threshold) from the accepted losses."""
        median = statistics.median(self.losses)
        if len(self.losses) < EARLY_HISTORY:
            return median, EARLY_SPIKE_RATIO * median
        if self.start_level is None:
            self.start_level = median
        mad = statistics.median([abs(x - median) for x in self.losses]) * 1.4826
        return median, max(median + SPIKE_MADS * mad, SPIKE_RATIO * median, median + SPIKE_FLOOR * self.start_level)

    def _intervene(self, trainer: Any, cause: str, spike: bool) -> None:
        damaged = not _all_finite(trainer.model)
        actions = ["skipped the step"]
        if (damaged or spike) and self.snapshot is not None:
            lrs = [group["lr"] for group in trainer.optimizer.param_groups]
            trainer.model.load_state_dict(self.snapshot["model"])
            # A copy: the optimizer adopts the tensors it is given and updates them in place.
            trainer.optimizer.load_state_dict(copy_state(self.snapshot["optimizer"]))
            for group, lr in zip(trainer.optimizer.param_groups, lrs):  # earlier back-offs stay
                group["lr"] = lr
            actions.append(f"rolled back to step {self.snapshot_step}")
        trainer.lr_schedule.scale_lr(self.lr_factor)
        lr_after = trainer.optimizer.param_groups[0]["lr"]
        actions.append(f"backed the learning rate off to {lr_after:.3g}")
        record = {"step": trainer.step, "epoch": trainer.epoch + 1, "cause": cause,
                  "action": ", ".join(actions), "lr_after": lr_after}
        self.interventions.append(record)
        trainer.log({"kind": "intervention", **record})
        recent = [r for r in self.interventions if r["step"] > trainer.step - self.window]
        if len(recent) > self.max_interventions:
            raise TrainingError(self._give_up_message(trainer, recent))

    def _give_up_message(self, trainer: Any, recent: list[dict[str, Any]]) -> str:
        first_lr = recent[0]["lr_after"] / self.lr_factor
        causes = sorted({r["cause"].split(" (")[0] for r in recent})
        return (
            f"the run is not healthy: {len(recent)} interventions within {self.window} steps "
            f"(step {recent[0]['step']} to {recent[-1]['step']}: {', '.join(causes)}), even after backing the "
            f"learning rate off from {first_lr:.3g} to {recent[-1]['lr_after']:.3g}. The learning rate is probably "
            "too high (or the data holds bad values); try a lower --lr, --clip 1.0, or a warmup. "
            f"Last good checkpoint: {trainer.last_checkpoint or 'none written'}"
        )

    def _take_snapshot(self, trainer: Any) -> None:
        """Copy the model and optimizer state (into the previous snapshot's buffers): the
        'last good state' a rollback returns to."""
        self.snapshot = copy_state({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()},
                                   reuse=self.snapshot)
        self.snapshot_step = trainer.step

    # -- state

    def state_dict(self) -> dict[str, Any]:
        """The guard's state. The rollback snapshot is not copied into it: saving refreshes the
        snapshot to the state being saved (every step in it passed the guard), and a resumed
        run rebuilds the snapshot from the restored weights — the same tensors, half the
        checkpoint's size. Only if the weights are not finite is the older snapshot kept and saved."""
        saved_snapshot = None
        if self._trainer is not None:
            if _all_finite(self._trainer.model):
                self._take_snapshot(self._trainer)
            else:
                saved_snapshot = self.snapshot
        return {"losses": list(self.losses), "interventions": list(self.interventions),
                "snapshot": saved_snapshot, "snapshot_step": self.snapshot_step,
                "level": self.level, "since_update": self.since_update, "start_level": self.start_level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses.clear()
        self.losses.extend(state["losses"])
        self.interventions = list(state["interventions"])
        self.snapshot = state["snapshot"]  # None: taken from the restored weights before the next step
        self.snapshot_step = state["snapshot_step"]
        self.level = tuple(state["level"]) if state["level"] is not None else None
        self.since_update = state["since_update"]
        self.start_level = state["start_level"]


def _all_finite(model: torch.nn.Module) -> bool:
    """Whether every weight is finite (one host sync). Not through a norm: the float32 norm
    of finite weights around 1e20 overflows to inf."""
    flags = [torch.isfinite(p.detach()).all() for p in model.parameters()]
    return not flags or bool(torch.stack(flags).all())
