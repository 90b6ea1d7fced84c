"""Learning-rate schedules: seed 003's CosineSchedule, the built-ins by name, and one
adapter that lets the trainer drive any of them the same way.

Built-in schedules are pure functions of the optimizer step (a multiplier of the
base learning rate), run through torch's ``LambdaLR``: their only state is the
step counter, so resuming is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from trainwell.errors import ConfigError

SCHEDULE_NAMES = ("constant", "step", "cosine", "warmup-cosine", "plateau", "one-cycle", "linear")


class CosineSchedule:
    """Seed 003's cosine annealing from ``max_lr`` to ``min_lr`` over ``total_epochs``."""

    def __init__(self, max_lr: float = 0.1, min_lr: float = 0.01, total_epochs: int = 100):
        self.max_lr = max_lr
        self.min_lr = min_lr
        self.total_epochs = total_epochs

    def get_lr(self, epoch: int) -> float:
        """``min + (max - min) * (1 + cos(pi * epoch / total)) / 2``; ``min_lr`` from ``total`` on."""
        if epoch >= self.total_epochs:
            return self.min_lr
        cosine = (1 + math.cos(math.pi * epoch / self.total_epochs)) / 2
        return self.min_lr + (self.max_lr - self.min_lr) * cosine


# --- built-in multipliers: pure functions of the step --------------------------------


@dataclass
class Constant:
    def __call__(self, step: int) -> float:
        return 1.0


@dataclass
class StepDecay:
    """Multiply by ``gamma`` every ``step_size`` optimizer steps."""

    step_size: int
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


@dataclass
class WarmupCosine:
    """Linear warmup over ``warmup_steps`` (from 1/warmup to 1), then cosine down to ``min_ratio``."""

    total_steps: int
    warmup_steps: int = 0
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * (1 + math.cos(math.pi * progress)) / 2


@dataclass
class WarmupLinear:
    """Linear warmup over ``warmup_steps`` (from 1/warmup to 1), then a straight line down to 0 at
    ``total_steps``: the schedule BERT-style fine-tuning uses (Hugging Face's ``linear``)."""

    total_steps: int
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: int,
    options: Mapping[str, Any] | None = None,
) -> LRScheduler | ReduceLROnPlateau:
    """A torch scheduler for a built-in schedule name; every one but ``plateau`` steps per optimizer step."""
    opts = dict(options or {})
    scheduler: LRScheduler | ReduceLROnPlateau
    if name == "constant":
        scheduler = LambdaLR(optimizer, Constant())
    elif name == "step":
        epochs_per_decay = int(opts.pop("step_size_epochs", max(1, total_steps // steps_per_epoch // 3)))
        decay = StepDecay(epochs_per_decay * steps_per_epoch, float(opts.pop("gamma", 0.1)))
        scheduler = LambdaLR(optimizer, decay)
    elif name in ("cosine", "warmup-cosine"):
        warmup = int(opts.pop("warmup_steps", 0))
        shape = WarmupCosine(total_steps, warmup, float(opts.pop("min_ratio", 0.0)))
        scheduler = LambdaLR(optimizer, shape)
    elif name == "linear":
        ratio = float(opts.pop("warmup_ratio", 0.0))  # a share of the run: its length is known only here
        warmup = int(opts.pop("warmup_steps", 0)) or round(ratio * total_steps)
        scheduler = LambdaLR(optimizer, WarmupLinear(total_steps, warmup))
    elif name == "plateau":
        factor, patience = float(opts.pop("factor", 0.1)), int(opts.pop("patience", 2))
        scheduler = ReduceLROnPlateau(optimizer, factor=factor, patience=patience)
    elif name == "one-cycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        scheduler = OneCycleLR(optimizer, max_lr=max_lrs, total_steps=max(total_steps, 2))
    else:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")
    if opts:
        raise ConfigError(f"schedule {name!r} got unknown options: {', '.join(sorted(opts))}")
    return scheduler


class ScheduleDriver:
    """Drives whichever scheduler the user gave (or none), so the loop calls three plain hooks.

    - a seed-style object with ``get_lr(epoch)`` sets the lr at each epoch start;
    - a torch scheduler steps per optimizer step (``interval="step"``) or per epoch;
    - ``ReduceLROnPlateau`` is fed the validation loss (the train loss without validation).
    """

    def __init__(self, scheduler: Any, optimizer: torch.optim.Optimizer, interval: str,
                 length: "ScheduleLength | None" = None):
        if interval not in ("step", "epoch"):
            raise ConfigError(f"scheduler interval must be 'step' or 'epoch', not {interval!r}")
        self.scheduler = scheduler
        self.optimizer = optimizer
        self.interval = interval
        self.length = length  # a built-in schedule's run length: it must not change on resume
        self.lr_scale = 1.0  # the health guard's back-off, applied on top of any schedule
        self.is_torch = isinstance(scheduler, (LRScheduler, ReduceLROnPlateau))
        self.steps_per_step = interval == "step" and isinstance(scheduler, LRScheduler)
        if scheduler is not None and not self.is_torch and not callable(getattr(scheduler, "get_lr", None)):
            raise ConfigError(
                "scheduler must be a torch.optim.lr_scheduler scheduler, an object with "
                f"get_lr(epoch), or a built-in name; got {type(scheduler).__name__}"
            )

    def epoch_start(self, epoch: int) -> None:
        if self.scheduler is not None and not self.is_torch:
            lr = float(self.scheduler.get_lr(epoch)) * self.lr_scale
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def step_end(self) -> None:
        if self.steps_per_step:
            self.scheduler.step()

    def epoch_end(self, monitored_loss: float | None) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if monitored_loss is not None and math.isfinite(monitored_loss):
                self.scheduler.step(monitored_loss)
        elif self.interval == "epoch" and isinstance(self.scheduler, LRScheduler):
            self.scheduler.step()

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate from now on by ``factor``, whatever drives it."""
        self.lr_scale *= factor
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        if isinstance(self.scheduler, LRScheduler):
            self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
            if isinstance(self.scheduler, OneCycleLR):
                for group in self.optimizer.param_groups:
                    for key in ("initial_lr", "max_lr", "min_lr"):
                        group[key] *= factor

    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "scheduler": self.scheduler.state_dict() if self.is_torch else {},
                "length": self.length.total_steps if self.length else None}

    def load_state_dict(self, state: dict) -> None:
        if self.length is not None and state.get("length") not in (None, self.length.total_steps):
            self.length.refuse(state["length"])
        self.lr_scale = state["lr_scale"]
        if self.is_torch:
            self.scheduler.load_state_dict(state["scheduler"])

    def check_length(self, length: "ScheduleLength | None") -> None:
        """A later ``fit`` asking for another run length than the schedule was built for is refused."""
        if self.length is not None and length is not None and length.total_steps != self.length.total_steps:
            length.refuse(self.length.total_steps)


@dataclass(frozen=True)
class ScheduleLength:
    """How long a built-in schedule was built to run; cosine and one-cycle end at their last step."""

    name: str
    total_steps: int
    steps_per_epoch: int

    def refuse(self, built_for: int) -> None:
        """Refuse to run this schedule for a length other than the one it was built for."""
        if self.name in ("constant", "plateau"):
            return  # these do not depend on the run's length
        raise ConfigError(
            f"the {self.name!r} schedule was built for {_epochs(built_for, self.steps_per_epoch)} "
            f"({built_for} optimizer steps), and this run asks for {_epochs(self.total_steps, self.steps_per_epoch)} "
            f"({self.total_steps} steps): the schedule would not fit the run (past its end it stays at its final "
            "learning rate, 0 for cosine). Keep the run's length, or start a new run with the length you want"
        )


def _epochs(steps: int, per_epoch: int) -> str:
    epochs = steps / max(per_epoch, 1)
    return f"{epochs:g} epochs" if epochs != 1 else "1 epoch"


def drive(spec: Any, interval: str | None, optimizer: torch.optim.Optimizer, batches: int | None,
          epochs: int | None, accumulation_steps: int) -> ScheduleDriver:
    """The driver for whatever ``scheduler`` the trainer got; built-in names need the run's length."""
    if spec is None:
        return ScheduleDriver(None, optimizer, "epoch")
    length = run_length(spec, batches, epochs, accumulation_steps)
    if isinstance(spec, (str, tuple, Mapping)):
        name, options = parse_schedule_spec(spec)
        if length is None:
            raise ConfigError(
                f"the built-in schedule {name!r} needs the run's length: use fit(epochs=...) "
                "with a loader that has a length, or pass a torch scheduler"
            )
        spec = build_schedule(name, optimizer, total_steps=length.total_steps, steps_per_epoch=length.steps_per_epoch,
                              options=options)
        interval = interval or ("epoch" if name == "plateau" else "step")
    return ScheduleDriver(spec, optimizer, interval or default_interval(spec), length)


def ensure_driver(trainer: Any, dataloader: Any, epochs: int | None, accumulation_steps: int) -> ScheduleDriver:
    """The trainer's schedule driver, built at its first use (with a restored state, if one is
    waiting) and checked against the run's length at every ``fit``."""
    from trainwell.data import num_batches
    from trainwell.distributed import shard_of

    shard = shard_of(dataloader, trainer.group)  # distributed: steps are counted per process
    batches = num_batches(dataloader) if shard is None else len(shard)
    if trainer.lr_schedule is None:
        driver = drive(trainer.scheduler, trainer.scheduler_interval, trainer.optimizer, batches, epochs,
                       accumulation_steps)
        if trainer._pending_scheduler_state is not None:
            driver.load_state_dict(trainer._pending_scheduler_state)
            trainer._pending_scheduler_state = None
        return driver
    trainer.lr_schedule.check_length(run_length(trainer.scheduler, batches, epochs, accumulation_steps))
    return trainer.lr_schedule


def run_length(spec: Any, batches: int | None, epochs: int | None, accumulation_steps: int) -> ScheduleLength | None:
    """The length a built-in schedule needs for this ``fit`` (None for other schedulers)."""
    if not isinstance(spec, (str, tuple, Mapping)) or epochs is None or batches is None:
        return None
    per_epoch = math.ceil(batches / accumulation_steps)
    return ScheduleLength(parse_schedule_spec(spec)[0], per_epoch * epochs, per_epoch)


def parse_schedule_spec(spec: Any) -> tuple[str, dict]:
    """``"NAME"``, ``("NAME", options)`` or ``{"name": NAME, **options}`` -> (name, options)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec[0], dict(spec[1])
    if isinstance(spec, Mapping) and "name" in spec:
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise ConfigError(f"a schedule by name is 'NAME', ('NAME', options) or {{'name': NAME, ...}}; names: {SCHEDULE_NAMES}")


def default_interval(scheduler: Any) -> str:
    """Per-step for schedulers built around a step count, per epoch for the rest (torch's convention)."""
    per_step = (OneCycleLR, torch.optim.lr_scheduler.CyclicLR)
    return "step" if isinstance(scheduler, per_step) else "epoch"
