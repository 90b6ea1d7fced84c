"""Hyperparameter sweeps on Optuna: a search space over TrainConfig fields, a seeded TPE sampler,
median pruning on each epoch's validation loss, and a study in SQLite that a rerun continues.

Each trial is a normal run directory (``SWEEP_DIR/trial-NNN``) trained through the same code
as ``trainwell train``; its console output goes to ``trial-NNN/train.log``. A sweep directory
holds ``sweep.yaml`` (what is searched, with which fixed options), ``study.db``, the trials,
and at the end ``best.yaml`` and ``study.html``. Optuna is imported only here.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.trial import TrialState

from trainwell.config import FIELDS, closest, field_kind, suggest_field, validate
from trainwell.errors import ConfigError, TrainwellError
from trainwell.events import StopTraining

KINDS = ("loguniform", "uniform", "int", "choice")
FORMS = "loguniform:LO:HI, uniform:LO:HI, int:LO:HI or choice:A,B,C"
NOT_SEARCHABLE = ("recipe", "run_dir")
SWEEP_FILE, STUDY_DB, BEST, PAGE = "sweep.yaml", "study.db", "best.yaml", "study.html"


@dataclass(frozen=True)
class Param:
    """One searched field: ``kind`` is one of KINDS; ``low``/``high`` bound a range, ``choices`` a choice."""

    name: str
    kind: str
    spec: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """The value the sampler picks for this trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if field_kind(self.name) is int or self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.kind == "loguniform")
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")

    def extremes(self) -> list[Any]:
        """The values a trial may get at the edges: each is checked against the config before any trial runs."""
        if self.kind == "choice":
            return list(self.choices)
        return [int(self.low), int(self.high)] if field_kind(self.name) is int or self.kind == "int" else [self.low, self.high]


def parse_param(name: str, spec: str, source: str) -> Param:
    """``spec`` (e.g. ``loguniform:1e-5:1e-1``) for field ``name``; ConfigError with one line naming ``source``."""
    if name not in FIELDS or name in NOT_SEARCHABLE:
        hint = suggest_field(name) if name not in FIELDS else f" ({name} is fixed for the whole sweep)"
        raise ConfigError(f"{source}: unknown parameter {name!r}{hint}; searchable: "
                          f"{', '.join(n for n in FIELDS if n not in NOT_SEARCHABLE)}")
    kind, _, rest = str(spec).partition(":")
    if kind not in KINDS:
        raise ConfigError(f"{source}: unknown search kind {kind!r}{closest(kind, KINDS)}; use {FORMS}")
    field = field_kind(name)
    if kind == "choice":
        items = [item.strip() for item in rest.split(",") if item.strip()]
        if not items:
            raise ConfigError(f"{source}: choice needs values, e.g. choice:32,64,128")
        return Param(name, kind, spec, choices=tuple(_choice_value(name, item, source) for item in items))
    if isinstance(field, tuple) or field is str:
        raise ConfigError(f"{source}: {name} is not a number; search it with choice:A,B,C")
    bounds = rest.split(":")
    try:
        low, high = (float(b) for b in bounds) if len(bounds) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{source}: expected {kind}:LO:HI with two numbers (got {spec!r})")
    if low >= high:
        raise ConfigError(f"{source}: LO must be below HI (got {spec!r})")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{source}: loguniform needs LO above 0 (got {spec!r})")
    integral = field is int or kind == "int"
    if integral and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{source}: {name} takes whole numbers; give whole LO and HI (got {spec!r})")
    if field is int and kind == "uniform":
        raise ConfigError(f"{source}: {name} takes whole numbers; use int:LO:HI or choice:A,B,C")
    return Param(name, kind, spec, low=low, high=high)


def _choice_value(name: str, item: str, source: str) -> Any:
    """A choice's text as the field's type: ``64`` for batch_size, ``0.1`` for lr, ``none`` for an optional field."""
    kind = field_kind(name)
    if item.lower() in ("none", "null") and FIELDS[name].default is None:
        return None
    if isinstance(kind, tuple):
        if item not in kind:
            raise ConfigError(f"{source}: {item!r} is not a choice of {name}{closest(item, kind)}; "
                              f"choose from {', '.join(kind)}")
        return item
    try:
        return int(item) if kind is int else float(item) if kind is float else item
    except ValueError:
        raise ConfigError(f"{source}: {name} takes {'whole numbers' if kind is int else 'numbers'} "
                          f"(got {item!r})") from None


def parse_space(file_space: Any, given: list[str], file_name: str | None) -> dict[str, Param]:
    """The search space: the config file's ``sweep:`` mapping, overridden by ``--param NAME=SPEC`` options."""
    if file_space is not None and not isinstance(file_space, dict):
        raise ConfigError(f"{file_name}: sweep must be a mapping of field names to specs, e.g. "
                          "{lr: 'loguniform:1e-5:1e-1'}")
    space = {str(name): parse_param(str(name), str(spec), f"{file_name}: sweep: {name}")
             for name, spec in (file_space or {}).items()}
    for option in given:
        name, equals, spec = option.partition("=")
        if not equals or not name.strip():
            raise ConfigError(f"--param {option}: expected NAME=SPEC, e.g. --param lr=loguniform:1e-5:1e-1")
        name = name.strip().replace("-", "_")
        space[name] = parse_param(name, spec.strip(), f"--param {option}")
    if not space:
        raise ConfigError("nothing to search: give --param NAME=SPEC (e.g. --param lr=loguniform:1e-5:1e-1) "
                          "or a sweep: mapping in the config file")
    return space


def check_space(base: dict[str, Any], space: dict[str, Param], sources: dict[str, str]) -> None:
    """Every edge of the space makes a valid config, so no trial fails on a value the user mistyped."""
    for param in space.values():
        for value in param.extremes():
            validate({**base, param.name: value}, {**sources, param.name: f"--param {param.name}={param.spec}"})


class PruningReporter:
    """Reports each epoch's validation loss (the training loss without a validation set) to the
    trial, and ends the run cleanly (StopTraining) when the pruner gives up on it."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.losses: list[float] = []
        self.validated = False
        self.pruned_at: int | None = None
        self.epochs = 0
        self.finished = False

    def on_fit_start(self, trainer: Any, epochs: int, **_: Any) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer: Any, metrics: dict[str, float], **_: Any) -> None:
        self.validated = "eval_loss" in metrics
        loss = float(metrics["eval_loss"] if self.validated else metrics["train_loss"])
        self.losses.append(loss)
        if not math.isfinite(loss):
            return
        self.trial.report(loss, step=trainer.epoch)
        if trainer.epoch < self.epochs and self.trial.should_prune():  # a trial that trained in full keeps its result
            self.pruned_at = trainer.epoch
            raise StopTraining(f"pruned by the sweep at epoch {trainer.epoch}: "
                               f"{self.monitor} {loss:.4g} is worse than the median of earlier trials")

    def on_fit_end(self, trainer: Any, **_: Any) -> None:
        self.finished = True

    @property
    def monitor(self) -> str:
        return "validation loss" if self.validated else "training loss"

    @property
    def value(self) -> float:
        """The objective: the best validation loss, or the final training loss without validation."""
        finite = [loss for loss in self.losses if math.isfinite(loss)]
        if self.validated:
            return min(finite) if finite else math.nan
        return self.losses[-1] if self.losses else math.nan


class TrialFailed(Exception):
    """Training ended with an error: the trial is recorded as failed and counts as done."""


class SweepInterrupted(Exception):
    """A signal stopped the sweep during a trial: the trial runs again when the sweep is rerun."""


class _ThreadOutput:
    """sys.stdout / sys.stderr during a sweep: each trial's writes go to that trial's log file
    (per thread, so ``--jobs`` trials do not mix), everything else to the terminal."""

    def __init__(self, terminal: Any):
        self.terminal = terminal
        self.local = threading.local()

    def _target(self) -> Any:
        return getattr(self.local, "file", None) or self.terminal

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


@contextlib.contextmanager
def trial_output() -> Iterator[tuple[_ThreadOutput, _ThreadOutput]]:
    """Install the per-thread stdout/stderr for the sweep's duration."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ThreadOutput(saved[0]), _ThreadOutput(saved[1])
    try:
        yield sys.stdout, sys.stderr
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """This thread's output into ``path`` (inside ``trial_output``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    streams = [s for s in (sys.stdout, sys.stderr) if isinstance(s, _ThreadOutput)]
    with path.open("a", encoding="utf-8") as log:
        for stream in streams:
            stream.local.file = log
        try:
            yield
        finally:
            for stream in streams:
                stream.local.file = None


@contextlib.contextmanager
def exclusive(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep directory's lock: one sweep process at a time, so a trial left RUNNING
    in the study when the lock is free belongs to a process that died."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with (sweep_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another sweep is running in {sweep_dir}; wait for it, or choose another "
                              "--run-dir") from None
        yield


def open_study(sweep_dir: Path, seed: int, trials: int) -> optuna.Study:
    """The study in ``sweep_dir/study.db`` (created or continued): seeded TPE, median pruning.

    Both start modelling after ``startup`` trials: a third of the sweep, between 2 and 10
    (Optuna's default of 10 random trials would leave a short sweep entirely random).
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own line per trial
    startup = max(2, min(10, trials // 3))
    storage = optuna.storages.RDBStorage(f"sqlite:///{(sweep_dir / STUDY_DB).resolve()}")
    return optuna.create_study(
        study_name=sweep_dir.resolve().name, storage=storage, direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=2),
    )


def interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """Killed or stopped by a signal (not a result): such a trial runs again."""
    return trial.state == TrialState.RUNNING or (trial.state == TrialState.FAIL and "failure" not in trial.user_attrs)


def done(study: optuna.Study) -> int:
    """Trials with a result: complete, pruned, or failed in training."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not interrupted(t))


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials a dead process left RUNNING as failed, and queue each interrupted trial's
    parameters once more (a new trial number, so no directory is reused). Call under ``exclusive``."""
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    queued = []
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        if interrupted(trial) and trial.number not in rerun:
            study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
            queued.append(trial.number)
    return queued


def trial_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / f"trial-{number:03d}"


def objective(sweep_dir: Path, base: dict[str, Any], sources: dict[str, str], space: dict[str, Param],
              received: list[str], say: Any) -> Any:
    """The function Optuna minimizes: train one trial as a normal run, return its objective."""
    from trainwell.cli.train import start

    def run_trial(trial: optuna.Trial) -> float:
        if received:
            raise SweepInterrupted(received[0])
        params = {name: param.suggest(trial) for name, param in space.items()}
        directory = trial_dir(sweep_dir, trial.number)
        again = f" (again, for interrupted trial {trial.user_attrs['rerun_of']})" if "rerun_of" in trial.user_attrs else ""
        say(f"trial {trial.number}: {format_params(params)}{again}")
        reporter = PruningReporter(trial)
        try:  # a config this combination makes invalid, or one the recipe or device refuses, is this trial's result
            config = validate({**base, **params, "run_dir": str(directory)}, sources)
            with log_to(directory / "train.log"):
                code = start(config, directory, None, received, callbacks=[reporter])
        except TrainwellError as refused:
            raise TrialFailed(str(refused)) from None
        trial.set_user_attr("monitor", reporter.monitor)
        if code != 0:
            raise TrialFailed(_failure_line(directory / "train.log"))
        if not reporter.finished:
            raise SweepInterrupted(received[0] if received else "a signal")
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at", reporter.pruned_at)
            raise optuna.TrialPruned()
        if not math.isfinite(reporter.value):
            raise TrialFailed(f"the {reporter.monitor} was not finite")
        return reporter.value

    def recorded_failure(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except TrialFailed as failure:
            trial.set_user_attr("failure", str(failure))
            raise
    return recorded_failure


def _failure_line(log: Path) -> str:
    """What the trial's log says went wrong (its last 'trainwell: training ...' line)."""
    lines = [line.removeprefix("trainwell: ") for line in log.read_text(encoding="utf-8").splitlines()
             if line.startswith("trainwell: training")]
    return lines[-1] if lines else "training failed"


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={format_value(value)}" for name, value in params.items())


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

