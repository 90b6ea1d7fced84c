"""The fixed set of events callbacks hang off, and the signals they may raise.

A callback is any object with methods named ``on_<event>(trainer, **info)`` for
the events it cares about; missing hooks are skipped. A callback with
``state_dict()`` / ``load_state_dict()`` is saved in every checkpoint.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Iterable


class Event(str, Enum):
    """Where each event fires, as the loop in pseudocode::

        fit(train, val, epochs):
            FIT_START
            for epoch in epochs:
                EPOCH_START
                for window in micro-batch windows of `accumulation_steps`:
                    for micro-batch in window:
                        forward -> loss * (samples / window samples) -> backward
                    unscale, clip (norm recorded)
                    BEFORE_STEP(grad_norm, loss)   # a callback may raise SkipStep
                    optimizer.step(); zero_grad; schedule per step
                    STEP_END(loss, grad_norm, lr)
                TRAIN_END(metrics)                  # train metrics of the epoch
                evaluate(val) -> EVAL_END(metrics)
                schedule per epoch
                EPOCH_END(metrics)                  # a callback may raise StopTraining
                CHECKPOINT(path)                    # after a checkpoint is written
            FIT_END(history)
    """

    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BEFORE_STEP = "before_step"
    STEP_END = "step_end"
    TRAIN_END = "train_end"
    EVAL_END = "eval_end"
    EPOCH_END = "epoch_end"
    CHECKPOINT = "checkpoint"
    FIT_END = "fit_end"


def default_callbacks(callbacks: Iterable[Any], health: Any, grad_flow_every: int | None, verbose: bool,
                      run_directory: Any) -> list[Any]:
    """The user's callbacks with the built-in ones around them, in the order the loop needs.

    The guard sees a step first (it may veto it); the run directory goes last, so every
    other callback's state is current when it writes a checkpoint.
    """
    callbacks = list(callbacks)
    if health:
        from trainwell.health import HealthGuard

        callbacks.insert(0, health if isinstance(health, HealthGuard) else HealthGuard())
    if grad_flow_every:
        from trainwell.gradflow import GradientFlow

        callbacks.append(GradientFlow(every=grad_flow_every))
    from trainwell.baseline import ConstantBaseline
    from trainwell.memory import MemoryProbe

    if not any(isinstance(cb, MemoryProbe) for cb in callbacks):
        callbacks.append(MemoryProbe(cpu=False))  # the measured CUDA peak beside the estimate (docs/memory.md)

    if not any(isinstance(cb, ConstantBaseline) for cb in callbacks):
        callbacks.append(ConstantBaseline())  # the regression baseline the verdict compares against
    if verbose:
        from trainwell.console import ConsoleReporter

        callbacks.append(ConsoleReporter())
    if run_directory is not None:
        callbacks.append(run_directory)
    return callbacks


class StopTraining(Exception):
    """Raised by a callback to end ``fit()`` cleanly after the current epoch's bookkeeping."""


class SkipStep(Exception):
    """Raised in ``BEFORE_STEP`` to drop this optimizer step (its gradients are discarded)."""


class Callback:
    """Optional base class; any object with ``on_<event>`` methods works the same."""


class Dispatcher:
    """Calls each callback's hook for an event, in the order the callbacks were given."""

    def __init__(self, callbacks: Iterable[Any]):
        self.callbacks = list(callbacks)
        self._hooks: dict[Event, list] = {
            event: [getattr(cb, f"on_{event.value}") for cb in self.callbacks if hasattr(cb, f"on_{event.value}")]
            for event in Event
        }

    def __call__(self, event: Event, trainer: Any, **info: Any) -> None:
        """Run every hook; a StopTraining is re-raised only after all of them ran."""
        stop: StopTraining | None = None
        for hook in self._hooks[event]:
            try:
                hook(trainer, **info)
            except StopTraining as signal:
                stop = stop or signal
        if stop is not None:
            raise stop

    def step_event(self, event: Event, trainer: Any, loss: Any, grad_norm: Any) -> None:
        """``BEFORE_STEP`` or ``STEP_END``, fired on every step: the hooks get their keywords
        directly (forwarding ``**info`` costs about 1 µs a hook), and whatever a hook raises
        (``SkipStep``) propagates at once."""
        for hook in self._hooks[event]:
            hook(trainer, loss=loss, grad_norm=grad_norm)

    def has(self, event: Event) -> bool:
        return bool(self._hooks[event])

    def state_dict(self) -> dict[str, Any]:
        return {key: cb.state_dict() for key, cb in self._stateful().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self._stateful()
        missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
        if missing or unexpected:
            raise KeyError(
                f"callback state does not match the callbacks given: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}; build the Trainer with the callbacks (and run_dir) "
                "the checkpoint was written with"
            )
        for key, cb in expected.items():
            cb.load_state_dict(state[key])

    def _stateful(self) -> dict[str, Any]:
        """Callbacks with state, keyed by class name (``Name#2`` for a second one of a class)."""
        keyed: dict[str, Any] = {}
        for cb in self.callbacks:
            if hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict"):
                name = type(cb).__name__
                key, count = name, 1
                while key in keyed:
                    count += 1
                    key = f"{name}#{count}"
                keyed[key] = cb
        return keyed
