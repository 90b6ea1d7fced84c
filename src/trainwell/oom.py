"""Out-of-memory proof training: recognise an allocator's out-of-memory error, free what the
failed attempt held, and pick the smaller micro-batch the same samples are retried with.

The trainer splits each loaded batch into micro-batches of the size chosen here and weighs
each by its share of the step's samples, so the update does not change (see ``docs/out-of-memory.md``).
"""

from __future__ import annotations

import gc
import math
from typing import Any, Callable, TypeVar

import torch

from trainwell.errors import TrainingError

T = TypeVar("T")

# torch raises these for CUDA (and, in recent versions, MPS and XPU); the message is the fallback.
_OUT_OF_MEMORY = tuple({getattr(torch, "OutOfMemoryError", RuntimeError), torch.cuda.OutOfMemoryError})


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error: torch's type, or a RuntimeError saying "out of
    memory" (MPS's and older XPU's). A device-side assert or any other error is not."""
    if not isinstance(error, RuntimeError) or "device-side assert" in str(error):
        return False
    return isinstance(error, _OUT_OF_MEMORY) or "out of memory" in str(error).lower()


def retrying(attempt: Callable[[], T], shrink: Callable[[str], None]) -> T:
    """``attempt()``, called again after ``shrink(message)`` for as long as it runs out of memory.

    ``shrink`` runs after the ``except`` block has ended, so the failed attempt's tensors (held
    by its frames through the traceback) are already released; any other error propagates unchanged.
    """
    while True:
        try:
            return attempt()
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            text = str(error).strip()
            message = text.splitlines()[0][:200] if text else type(error).__name__
        shrink(message)


def step_rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch's CPU generator and ``device``'s, as a step starts, for a retry to replay the same draws
    (dropout, random ops in the model): a copy of about a microsecond, no device sync."""
    accelerator = getattr(torch, device.type).get_rng_state(device) if device.type != "cpu" else None
    return torch.get_rng_state(), accelerator


def rewind_rng(saved: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    """Put back what ``step_rng_state`` captured."""
    cpu, accelerator = saved
    torch.set_rng_state(cpu)
    if accelerator is not None:
        getattr(torch, device.type).set_rng_state(accelerator, device)


def release_memory(device: torch.device) -> None:
    """Collect what is now unreferenced and hand the allocator's cached blocks back to the device."""
    gc.collect()
    module = getattr(torch, device.type, None)
    if device.type != "cpu" and hasattr(module, "empty_cache"):
        module.empty_cache()


def halve(trainer: Any, message: str, sizes: list[int], current: int | None, what: str) -> int:
    """The size to retry with after ``message`` (an out-of-memory error) with the loaded batches of
    ``sizes`` split into parts of ``current`` (None: whole): logged as an intervention and a notice.

    One sample that does not fit is a TrainingError; so is training under torchrun, where the
    other processes are already waiting in a collective that this one would never join.
    """
    release_memory(trainer.device)
    attempted = min(max(sizes), current or max(sizes))
    where = f"{trainer.device}" + (f" (rank {trainer.group.rank})" if trainer.group is not None else "")
    if attempted <= 1:
        raise TrainingError(f"a single sample does not fit in memory on {where}: {message}; use a smaller model "
                            f"or inputs, --precision bf16, or a device with more memory")
    if trainer.group is not None and what == "micro-batch":
        raise TrainingError(f"out of memory on {where} at micro-batch {attempted}: {message}; under torchrun "
                            f"the micro-batch is not shrunk mid-step (the other processes wait in a collective "
                            f"for this one): rerun with a smaller --batch-size and a larger --accumulate")
    size = attempted // 2
    before, after = (sum(math.ceil(n / s) for n in sizes) for s in (attempted, size))
    action = f"{what} {attempted} -> {size}"
    action += (f", accumulation {before} -> {after} micro-batches per step" if what == "micro-batch"
               else f" ({before} -> {after} forward passes per loaded batch)")
    trainer.log({"kind": "intervention", "step": trainer.step, "epoch": trainer.epoch,
                 "cause": f"out of memory on {trainer.device} ({message})", "action": action})
    trainer.notice(f"out of memory on {where} at {what} {attempted}: retrying the same samples as {what}es "
                   f"of {size} for the rest of the run (the result is the same)", warn=True)
    return size
