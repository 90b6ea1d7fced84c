"""The complete training state of a ``Trainer``: what a checkpoint holds and how it comes back.

A checkpoint is one dict of every stateful piece's own ``state_dict()``: the trainer's
counters and history, the model, optimizer, scheduler, scaler, callbacks and every RNG.
Loading is strict: a missing or unexpected key is an error that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from trainwell import checkpoint
from trainwell.errors import CheckpointError, ConfigError
from trainwell.events import Event
from trainwell.metrics import EpochMeter
from trainwell.runtime import rng_state, set_rng_state

FORMAT = 1
KEYS = {"format", "trainer", "model", "optimizer", "scheduler", "scaler", "callbacks", "rng"}


def capture(trainer: Any) -> dict[str, Any]:
    """The trainer's complete state, as ``Trainer.state_dict()`` returns it.

    Distributed, every process calls it (one gather): the RNG states and the epoch's running
    sums differ per process and are kept for each rank; the rest is the same everywhere.
    """
    rng, meter = rng_state(), trainer._meter.state_dict()
    per_rank: dict[str, Any] = {}
    if trainer.group is not None:
        rng, meter = (list(values) for values in zip(*trainer.group.gather((rng, meter))))
        per_rank["world_size"] = trainer.group.world_size
    return {
        "format": FORMAT,
        "trainer": {
            "epoch": trainer.epoch,
            "step": trainer.step,
            "position": trainer.position,
            "data_seed": trainer.data_seed,
            # set after an out-of-memory error, so a resume does not hit it again (None: whole batches)
            "micro_batch_size": trainer.micro_batch_size,
            "eval_micro_batch_size": trainer.eval_micro_batch_size,
            "history": {k: list(v) for k, v in trainer.history.items()},
            "meter": meter,
            **per_rank,
        },
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.lr_schedule.state_dict() if trainer.lr_schedule else trainer._pending_scheduler_state,
        "scaler": trainer.scaler.state_dict() if trainer.scaler else None,
        "callbacks": trainer.events.state_dict(),
        "rng": rng,
    }


def save(trainer: Any, path: Path, wait: bool, then: Callable[[Path], None] | None) -> Path:
    """Capture the state now and write it to ``path`` (on the trainer's background writer)."""

    def written(done: Path) -> None:
        trainer.last_checkpoint = done
        if then is not None:
            then(done)

    captured = trainer.state_dict()  # distributed: every process takes part; only the main one writes
    if not trainer.is_main:
        trainer.last_checkpoint = path
        return path
    trainer._writer.submit(captured, path, then=written)
    trainer.events(Event.CHECKPOINT, trainer, path=path)
    if wait:
        trainer.wait_for_checkpoints()
    return path


def restore(trainer: Any, state: Mapping[str, Any]) -> None:
    """Put ``capture()`` output back into ``trainer`` in place; a mismatch names the offending keys."""
    if set(state) != KEYS:
        raise CheckpointError(
            f"checkpoint keys differ: missing {sorted(KEYS - set(state))}, unexpected {sorted(set(state) - KEYS)}"
        )
    rng, meter = _this_rank(trainer, state)
    checkpoint.check_model_keys(trainer.model, state["model"])
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.lr_schedule is not None and state["scheduler"] is not None:
        trainer.lr_schedule.load_state_dict(state["scheduler"])
    else:  # the schedule is built at the first fit/train_epoch, which loads this then
        trainer._pending_scheduler_state = state["scheduler"]
    if trainer.scaler is not None and state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    try:
        trainer.events.load_state_dict(state["callbacks"])
    except KeyError as e:
        raise CheckpointError(str(e.args[0])) from e
    saved = state["trainer"]
    trainer.epoch, trainer.step, trainer.position = saved["epoch"], saved["step"], saved["position"]
    trainer.data_seed = saved["data_seed"]
    # checkpoints written before out-of-memory recovery existed have no micro-batch size: whole batches
    trainer.micro_batch_size = saved.get("micro_batch_size")
    trainer.eval_micro_batch_size = saved.get("eval_micro_batch_size")
    trainer.history = {key: list(saved["history"].get(key, [])) for key in trainer.history}
    trainer._meter = EpochMeter(trainer.device)
    trainer._meter.load_state_dict(meter)
    set_rng_state(rng)
    # Mid-epoch, rebuilding the epoch's batch order may draw from the global RNG: set it again after.
    trainer._resume_rng = rng if trainer.position > 0 else None


def _this_rank(trainer: Any, state: Mapping[str, Any]) -> tuple[Any, Any]:
    """(RNG state, meter state) of this process; a checkpoint of another number of processes is refused."""
    saved_world = state["trainer"].get("world_size", 1)
    world = trainer.group.world_size if trainer.group is not None else 1
    if saved_world != world:
        raise CheckpointError(
            f"the checkpoint was written by {saved_world} process(es) and this run has {world}: each process's "
            f"random state and data position are in it, so resume with {saved_world} (torchrun --nproc-per-node "
            f"{saved_world}), or start a new run from its weights (model.safetensors)"
        )
    if trainer.group is None:
        return state["rng"], state["trainer"]["meter"]
    return state["rng"][trainer.group.rank], state["trainer"]["meter"][trainer.group.rank]


def resume(trainer: Any, resume: str | os.PathLike) -> Path | None:
    """Load the checkpoint to go on from: ``"auto"`` takes the newest valid one in ``run_dir``
    (saying which newer ones were skipped, and starting fresh when there is none), else a path."""
    if str(resume) == "auto":
        if trainer.run_dir is None:
            raise ConfigError('resume="auto" needs run_dir, where the checkpoints are')
        path, skipped = checkpoint.latest_valid(trainer.run_dir / "checkpoints")
        for bad, problem in skipped:
            trainer.notice(f"skipped checkpoint {bad}: {problem}", warn=True)
        if path is None:
            trainer.notice(f"no valid checkpoint in {trainer.run_dir / 'checkpoints'}; starting fresh", warn=True)
            return None
    else:
        path = Path(resume)
    trainer.load_checkpoint(path)
    trainer.resumed_from = {"path": str(path), "step": trainer.step, "epoch": trainer.epoch, "batch": trainer.position}
    where = f"epoch {trainer.epoch + 1}, batch {trainer.position}" if trainer.position else f"the start of epoch {trainer.epoch + 1}"
    kept = f"; micro-batches of {trainer.micro_batch_size} (an earlier out-of-memory)" if trainer.micro_batch_size else ""
    trainer.notice(f"resumed from step {trainer.step} ({where}) of {trainer.run_dir or path}{kept}")
    return path
