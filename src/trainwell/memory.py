"""Seed 003's memory analysis, done for the real model, and checked against a measurement.

``estimate``: parameters + gradients (trainable parameters) + optimizer state (by optimizer
type, or the optimizer's own state once it has one) + the activations autograd saves for the
backward pass of one micro-batch (counted on one eval-mode forward with autograd on, plus the
dropout masks training would keep).

``MemoryProbe``: a callback that measures the training peak over a few steps once per fit
and logs it beside the estimate as a ``{"kind": "memory"}`` record (see docs/memory.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from typing import Any, Callable, ContextManager, Iterable

import torch
from torch import nn

PARTS = ("parameters", "gradients", "optimizer_state", "activations", "optimizer_step")
FOREACH_DEVICES = ("cuda", "xpu")  # where torch's optimizers default to their foreach kernels


def _momentum(group: Mapping[str, Any]) -> int:
    return 1 if group.get("momentum") else 0


# Full-size state tensors each optimizer keeps per parameter (scalars such as Adam's step are left out).
STATE_COPIES: dict[type, Callable[[Mapping[str, Any]], int]] = {
    torch.optim.Adam: lambda g: 3 if g.get("amsgrad") else 2,  # exp_avg, exp_avg_sq (+ max_exp_avg_sq)
    torch.optim.SGD: _momentum,  # momentum_buffer
    torch.optim.RMSprop: lambda g: 1 + _momentum(g) + (1 if g.get("centered") else 0),
    torch.optim.Adagrad: lambda g: 1,  # sum
    torch.optim.Adadelta: lambda g: 2,  # square_avg, acc_delta
    torch.optim.Adamax: lambda g: 2,  # exp_avg, exp_inf
    torch.optim.NAdam: lambda g: 2,
    torch.optim.RAdam: lambda g: 2,
    torch.optim.ASGD: lambda g: 1,  # ax
    torch.optim.Rprop: lambda g: 2,  # prev, step_size
}
UNKNOWN_COPIES = 2  # an optimizer not in the table is assumed to keep two copies, as Adam does


def estimate(model: nn.Module, optimizer: torch.optim.Optimizer, example_inputs: Any = None, *,
             targets: Any = None, loss_fn: Callable | None = None,
             autocast: ContextManager | None = None) -> dict[str, int | None]:
    """Bytes for each part of training memory, and their ``total``.

    Activations need ``example_inputs`` (one micro-batch; with ``targets`` and ``loss_fn`` the
    loss's saved tensors count too) and are None when the model fails on them: the estimate is
    never the first thing to fail, the trainer's first-batch checks explain what is wrong.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    result: dict[str, int | None] = {
        "parameters": _unique_bytes(model.parameters()), "gradients": _unique_bytes(trainable),
        "optimizer_state": optimizer_state_bytes(optimizer), "activations": 0,
        "optimizer_step": optimizer_step_bytes(optimizer),
    }
    if example_inputs is not None:
        result["activations"] = saved_activation_bytes(model, example_inputs, targets, loss_fn, autocast)
    # backward frees the activations before the optimizer steps: the two never coexist
    result["total"] = (result["parameters"] + result["gradients"] + result["optimizer_state"]
                       + max(result["activations"] or 0, result["optimizer_step"]))
    return result


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The optimizer's state tensors once it has them (after a step or a resume); before that,
    the copies its type keeps (``STATE_COPIES``) times its trainable parameters' bytes."""
    if optimizer.state:
        return _unique_bytes(t for entry in optimizer.state.values() for t in entry.values()
                             if isinstance(t, torch.Tensor))
    copies = next((rule for cls in type(optimizer).__mro__ if (rule := STATE_COPIES.get(cls))), None)
    return sum((copies(group) if copies else UNKNOWN_COPIES) * _unique_bytes(p for p in group["params"] if p.requires_grad)
               for group in optimizer.param_groups)


def optimizer_step_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Temporaries of Adam/AdamW's update: none for the fused kernel; one copy of all the
    parameters for the foreach kernels (``sqrt`` of the second moments); two of the largest
    parameter for the loop over tensors (``sqrt``, then the division); plus the gradient plus
    weight decay for Adam's coupled decay. Other optimizers: none counted."""
    if not isinstance(optimizer, torch.optim.Adam):
        return 0
    total = 0
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.requires_grad]
        if not params or group.get("fused") or group.get("differentiable"):
            continue
        foreach = group.get("foreach")
        if foreach is None:
            foreach = all(p.device.type in FOREACH_DEVICES for p in params)
        sizes = [p.numel() * p.element_size() for p in params]
        copies = 1 + (1 if group.get("weight_decay") and not isinstance(optimizer, torch.optim.AdamW) else 0)
        total = max(total, copies * sum(sizes) if foreach else (copies + 1) * max(sizes))
    return total


def saved_activation_bytes(model: nn.Module, inputs: Any, targets: Any = None, loss_fn: Callable | None = None,
                           autocast: ContextManager | None = None) -> int | None:
    """Bytes of the tensors autograd saves for backward on one forward of ``inputs`` (unique
    storages; parameters, buffers and the inputs themselves left out: they exist anyway).

    The forward runs in eval mode with autograd on, so a model's training-only behaviour (its
    own counters, a fault it injects, dropout's RNG draws) is not triggered before training;
    the masks the ``nn.Dropout`` modules would save in training (one byte an element) are
    added. It runs on a forked RNG and the buffers are put back, so training afterwards is
    exactly what it would have been. None when the model fails on ``inputs``.
    """
    excluded = {_storage(t) for t in [*model.parameters(), *model.buffers(), *_tensors(inputs), *_tensors(targets)]}
    saved: dict[int, int] = {}
    masks = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage(tensor)
        if key not in excluded:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    def dropout_mask(module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal masks
        if isinstance(output, torch.Tensor) and module.p > 0:
            masks += output.numel()  # training keeps a bool mask of the output's shape

    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    handles = [m.register_forward_hook(dropout_mask) for m in dropouts]
    buffers = [b.detach().clone() for b in model.buffers()]
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    try:
        with _forked_rng(device), torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.eval()
            with autocast or contextlib.nullcontext():
                outputs = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
                if loss_fn is not None and targets is not None:
                    logits = outputs if isinstance(outputs, torch.Tensor) else getattr(outputs, "logits", outputs)
                    with contextlib.suppress(Exception):  # a loss that fails here leaves the model's part
                        loss_fn(logits, targets)
    except Exception:  # noqa: BLE001 - any failure here is reported, better, by the first-batch checks
        return None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, before in zip(model.buffers(), buffers):
                buffer.copy_(before)
    return sum(saved.values()) + masks


def example_batch(train_data: Any, device: torch.device) -> tuple[Any, Any]:
    """(inputs, targets) of one micro-batch of an in-memory loader, else (None, None): drawing a
    batch from a DataLoader would move its sampler's RNG and start its workers."""
    from trainwell.data import InMemoryLoader

    if not isinstance(train_data, InMemoryLoader):
        return None, None
    inputs, targets = (t[: train_data.batch_size].to(device) for t in train_data.tensors[:2])
    return inputs, targets


class MemoryProbe:
    """Measures the training peak over ``steps`` optimizer steps, once per fit, and logs
    ``{"kind": "memory", "estimated": {...}, "measured_peak": bytes, "method": ...}``.

    It starts after the first step (so the first-batch checks and the optimizer's state
    creation are behind it) and stops after ``steps`` more, at the latest at the epoch's end
    (evaluation is not measured; an epoch of one step is measured from the next epoch's start). Measured peak =
    the bytes of parameters, gradients and optimizer state alive when it starts + the highest
    point, over the steps, of what torch allocated minus what it freed since then: on CUDA
    from ``max_memory_allocated`` (its peak counter is reset), on CPU from the torch profiler's
    memory events. Data held before the probe (a data set in memory) is not in it. It changes
    no number the training computes and keeps no state a checkpoint needs.

    ``example_inputs``: one micro-batch of inputs for the activation estimate where the training
    data is not a ``tw.InMemoryLoader``. ``cpu=False`` (the built-in probe every trainer gets) measures on CUDA only: the CPU
    profiler is global to the process, so it is used only when asked for, one probe at a time.
    """

    def __init__(self, steps: int = 3, cpu: bool = True, example_inputs: Any = None):
        self.steps, self.cpu = steps, cpu
        self.example_inputs = example_inputs  # one micro-batch, for data the probe cannot read a batch from
        self.estimated: dict[str, int | None] | None = None
        self._meter: _CudaPeak | _CpuPeak | None = None
        self._armed = False
        self._stepped = False  # a step of this fit is done: the first-batch checks are behind it
        self._counted = 0
        self._at_start = 0

    def on_fit_start(self, trainer: Any, train_data: Any = None, **_: Any) -> None:
        from trainwell.runtime import autocast, to_device

        self._stop()  # left running by a fit that raised mid-measurement
        inputs, targets = example_batch(train_data, trainer.device)
        if inputs is None and self.example_inputs is not None:  # a recipe's own loader (text): its example
            inputs = to_device(self.example_inputs, trainer.device)
        self.estimated = estimate(trainer.model, trainer.optimizer, inputs, targets=targets, loss_fn=trainer.loss_fn,
                                  autocast=autocast(trainer.precision, trainer.device))
        self._armed, self._stepped = True, False

    def on_epoch_start(self, trainer: Any, **_: Any) -> None:
        if self._armed and self._stepped and self._meter is None:  # an epoch of one step: measure it whole
            self._begin(trainer)

    def on_step_end(self, trainer: Any, **_: Any) -> None:
        self._stepped = True
        if self._meter is not None:
            self._counted += 1
            if self._counted >= self.steps:
                self._finish(trainer)
        elif self._armed:
            self._begin(trainer)

    def on_train_end(self, trainer: Any, **_: Any) -> None:
        if self._meter is not None:
            if self._counted:
                self._finish(trainer)
            else:  # it started on the epoch's last step: evaluation is not training, start again next epoch
                self._stop()

    def on_fit_end(self, trainer: Any, **_: Any) -> None:
        self._stop()

    def _begin(self, trainer: Any) -> None:
        device = trainer.device
        if device.type == "cuda":
            self._meter = _CudaPeak(device)
        elif device.type == "cpu" and self.cpu and not torch.autograd._profiler_enabled():  # never disturb theirs
            self._meter = _CpuPeak.start()
        if self._meter is None:
            return
        self._counted = 0
        self._at_start = live_training_bytes(trainer.model, trainer.optimizer, device)

    def _finish(self, trainer: Any) -> None:
        meter, self._meter, self._armed = self._meter, None, False
        peak = meter.stop()
        trainer.log({"kind": "memory", "step": trainer.step, "estimated": self.estimated,
                     "measured_peak": self._at_start + peak, "at_start": self._at_start, "steps": self._counted,
                     "method": meter.METHOD})

    def _stop(self) -> None:
        if self._meter is not None:
            self._meter.stop()
            self._meter = None


def live_training_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Bytes of the parameters, gradients and optimizer state on ``device`` (unique storages)."""
    state = [t for entry in optimizer.state.values() for t in entry.values() if isinstance(t, torch.Tensor)]
    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None), *state]
    return _unique_bytes(t for t in tensors if t.device.type == device.type)


class _CudaPeak:
    """The CUDA caching allocator's peak of allocated bytes above what was allocated at the start."""

    METHOD = "cuda: torch.cuda.max_memory_allocated over the steps, above memory_allocated at the start"

    def __init__(self, device: torch.device):
        self.device = device
        torch.cuda.synchronize(device)
        self.base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)

    def stop(self) -> int:
        torch.cuda.synchronize(self.device)
        return max(torch.cuda.max_memory_allocated(self.device) - self.base, 0)


class _CpuPeak:
    """The running sum of the CPU allocator's allocation (+) and free (-) events, as the torch
    profiler records them with ``profile_memory=True``; its highest point."""

    METHOD = "cpu: torch profiler memory events (allocations minus frees) over the steps"
    _running = threading.Lock()  # one profiler a process: a second probe (another thread's fit) measures nothing

    @classmethod
    def start(cls) -> "_CpuPeak | None":
        return cls() if cls._running.acquire(blocking=False) else None

    def __init__(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.quiet = _QuietStderr()
        self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.profiler.start()
        atexit.register(self.stop)  # a fit that raised mid-measurement: stop before torch's own exit

    def stop(self) -> int:
        atexit.unregister(self.stop)
        try:
            self.profiler.stop()
        finally:
            self.quiet.close()
            self._running.release()
        events = [e for e in self.profiler.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
        running = peak = 0
        for event in sorted(events, key=lambda e: e.start_ns()):
            running += event.nbytes()
            peak = max(peak, running)
        return peak


class _QuietStderr:
    """File descriptor 2 into a temporary file while the profiler runs, written back when it
    stops without the lines kineto and the CPU allocator print about the profiler itself
    ("profiler_start", "Memory block of unknown size was allocated before the profiling
    started": a free of a tensor older than the probe, which the measurement leaves out)."""

    NOISE = ("SyncActivityProfilerHandler", "Memory block of unknown size")

    def __init__(self) -> None:
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        lines = self.file.read().decode(errors="replace").splitlines(keepends=True)
        self.file.close()
        kept = "".join(line for line in lines if not any(noise in line for noise in self.NOISE))
        if kept:
            sys.stderr.write(kept)
            sys.stderr.flush()


def _forked_rng(device: torch.device) -> ContextManager:
    """The CPU RNG, and ``device``'s when it is an accelerator, restored on exit (dropout draws from them)."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else getattr(torch, device.type).current_device()
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [v for v in value.values() if isinstance(v, torch.Tensor)]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, torch.Tensor)]
    return []


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied weights and views counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        seen.setdefault(_storage(tensor), tensor.untyped_storage().nbytes())
    return sum(seen.values())


def describe(sizes: dict[str, int | None], num_params: int) -> str:
    """One readable line, e.g. ``Memory estimate: 0.9 MB params (235,146) + ... = 4.2 MB``."""
    mb = {k: _mb(sizes[k]) if sizes.get(k) is not None else "? MB" for k in PARTS}
    last = f"{mb['activations']} activations"
    if sizes.get("optimizer_step"):
        last = f"max({last}, {mb['optimizer_step']} optimizer step)"
    parts = " + ".join([*(f"{mb[k]} {k.replace('_', ' ')}" for k in PARTS[:3]), last])
    ratio = sizes["total"] / max(sizes["parameters"], 1)
    return f"Memory estimate: {parts} = {_mb(sizes['total'])} ({ratio:.1f}x the model; {num_params:,} parameters)"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
