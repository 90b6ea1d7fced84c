"""The training loop: ``fit`` -> ``train_epoch`` -> ``_train_step``, read top to bottom.

Everything else (logging, checkpoint files, early stopping, progress output) hangs
off the events in ``trainwell.events``. Every stateful piece is saved by
``state_dict()`` and restored by ``load_state_dict()``; that is what makes resume exact.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from trainwell import checkpoint, oom, state
from trainwell.records import end_record, start_record
from trainwell.checks import check_dataset, check_options, check_window, first_batch, model_loss
from trainwell.data import InMemoryLoader, call_model, epoch_batches, num_batches, split, unpack, windows
from trainwell.evaluation import evaluate
from trainwell.distributed import Group, Shard, shard_of
from trainwell.errors import ConfigError, DataError, Interrupted, TrainwellError
from trainwell.events import Dispatcher, Event, SkipStep, StopTraining, default_callbacks
from trainwell.metrics import EpochMeter, accuracy_inputs
from trainwell.optim import GradientClipper, OptimizerStep
from trainwell.runtime import (autocast, check_precision, peak_memory, place_on_device, resolve_device,
                               seed_everything, set_rng_state, stop_on_signals)
from trainwell.schedules import ScheduleDriver, ensure_driver

HISTORY_KEYS = ("train_loss", "train_acc", "eval_loss", "eval_acc", "learning_rates", "grad_norm",
                "samples_per_sec", "epoch_time")


class Trainer:
    """Seed 003's Trainer, production grade: ``train_epoch``, ``evaluate``, checkpoints and ``fit``.

    ``loss_fn`` must return the mean over the batch (torch's default); with ``loss_fn=None``
    the model's output must carry ``.loss`` (Hugging Face style). ``scheduler`` is a
    ``get_lr(epoch)`` object, a torch scheduler, or a built-in name (``"cosine"``, or
    ``("warmup-cosine", {"warmup_steps": 100})``). ``seed`` seeds python, numpy and torch
    now and fixes the data order as a function of (seed, epoch).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any = None,
        scheduler: Any = None,
        grad_clip_norm: float | None = None,
        *,
        device: str | torch.device = "auto",
        precision: str = "32",
        callbacks: Iterable[Any] = (),
        run_dir: str | os.PathLike | None = None,
        seed: int | None = None,
        checkpoint_every_steps: int | None = None,
        scheduler_interval: str | None = None,
        log_every_steps: int = 50,
        keep_checkpoints: int = 3,
        health: Any = True,
        grad_norm_every: int = 10,
        grad_flow_every: int | None = 100,
        verbose: bool = False,
    ):
        self.group = Group.from_environment()  # under torchrun: this process's rank in the job
        self.device = resolve_device(device)
        if self.group is not None:
            self.device = self.group.device(self.device)
        self.precision = check_precision(precision, self.device)
        check_options(grad_clip_norm, grad_norm_every, checkpoint_every_steps, run_dir)
        if seed is not None:  # each process its own stream (dropout); DDP gives every one rank 0's weights
            seed_everything(seed + (self.group.rank if self.group else 0))
        self.model = model.to(self.device)
        self._net = self.group.wrap(self.model) if self.group else self.model  # what the training step runs
        self._all_sync = contextlib.nullcontext()  # reused: DDP syncs on every micro-batch but the no_sync ones
        self.optimizer = optimizer
        self._optimizer_step = OptimizerStep(optimizer)
        self.loss_fn = loss_fn
        self.grad_clip_norm = grad_clip_norm
        self._clipper = GradientClipper(self.model.parameters(), grad_clip_norm, grad_norm_every)
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "16" else None
        self._autocast = autocast(self.precision, self.device)  # reused: entered once per forward
        self.seed = seed
        # The data order is a pure function of (data_seed, epoch); without a seed, draw one and save it.
        self.data_seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.position = 0  # loaded batches consumed in the current epoch
        # Samples per forward, set when one ran out of memory (None: each loaded batch whole); checkpointed.
        self.micro_batch_size = self.eval_micro_batch_size = None  # type: int | None
        self.history: dict[str, list] = {key: [] for key in HISTORY_KEYS}
        self.stop_reason: str | None = None
        self.batches_per_epoch: int | None = None
        self._meter = EpochMeter(self.device)
        self._epoch_metrics: dict[str, float] = {}
        self.lr_schedule: ScheduleDriver | None = None
        self._pending_scheduler_state: dict | None = None
        self._resume_rng: dict | None = None
        self._kind: str | None = None
        self._train_checked = False  # the training data's first batch (or whole tensors) checked
        self._dataset_labels: torch.Tensor | None = None
        self.last_checkpoint: Path | None = None
        self._writer = checkpoint.BackgroundWriter()
        self._interrupted: str | None = None  # a signal this process received
        self._stopping: str | None = None  # the stop every process agreed on (distributed)
        self._shard: Shard | None = None  # this process's part of the training data (distributed)
        self._agreement = None  # the step's all-reduce of (loss, stop) in flight (distributed)
        self._data_wait = 0.0
        self.resumed_from: dict[str, Any] | None = None  # where the last resume() picked the run up
        # This process's own training, for honest throughput: resumed epochs' samples are not in it.
        self.samples_trained, self.train_seconds = 0, 0.0
        self._verbose = verbose
        self.run_directory = None
        if self.run_dir is not None:
            from trainwell.rundir import RunDirectory

            self.run_directory = RunDirectory(self.run_dir, checkpoint_every_steps, keep_checkpoints, log_every_steps,
                                              writes=self.group is None or self.group.is_main)
        callbacks = default_callbacks(callbacks, health, grad_flow_every, verbose and self.is_main, self.run_directory)
        self.callbacks = callbacks
        self.events = Dispatcher(callbacks)
        self._loggers = [cb for cb in callbacks if callable(getattr(cb, "log", None))]

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        train_data: Iterable,
        val_data: Iterable | None = None,
        *,
        epochs: int = 1,
        resume: str | os.PathLike | None = None,
        accumulation_steps: int = 1,
    ) -> dict[str, list]:
        """Train for ``epochs`` (in total, counting epochs already done when resuming)."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be a whole number of at least 1, got {epochs!r}")
        self._ensure_schedule(train_data, epochs, accumulation_steps)
        for data in (train_data, val_data):
            if isinstance(data, InMemoryLoader):
                place_on_device(data, self.device)
        if resume is None and self.run_dir is not None and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            resume = "auto"  # torchrun restarted the job: go on from the last checkpoint
        if resume is not None:
            self.resume(resume)
        if self.epoch >= epochs:  # nothing left to train: say so, and leave every file as it is
            self.notice(f"the run is already complete: {self.epoch} of {epochs} epochs trained; nothing to do")
            return self.history
        self.stop_reason = None
        started = time.perf_counter()
        self.events(Event.FIT_START, self, epochs=epochs, train_data=train_data, val_data=val_data, resume=resume)
        self.log(start_record(self, train_data))
        self._interrupted = self._stopping = None
        try:
            with stop_on_signals(self._request_stop):
                while self.epoch < epochs and self.stop_reason is None:
                    self.train_epoch(train_data, accumulation_steps)
                    if val_data is not None:
                        self.evaluate(val_data)
                    monitored = self._epoch_metrics.get("eval_loss", self._epoch_metrics.get("train_loss"))
                    self.lr_schedule.epoch_end(monitored)
                    try:
                        self.events(Event.EPOCH_END, self, metrics=dict(self._epoch_metrics))
                    except StopTraining as stop:
                        self.stop_reason = str(stop)
        except _Interrupt as signal:
            saved = self.run_directory.save_checkpoint(self, wait=True) if self.run_directory else None
            self.log(end_record(self, f"interrupted by {signal}", started))
            raise Interrupted(str(signal), saved) from None
        except TrainwellError as failure:
            self.log(end_record(self, f"failed: {failure}", started))
            raise
        self.events(Event.FIT_END, self, history=self.history)
        self.wait_for_checkpoints()
        self.log(end_record(self, self.stop_reason or "completed", started))
        return self.history

    def train_epoch(self, dataloader: Iterable, accumulation_steps: int = 1) -> float:
        """One pass over ``dataloader``; returns the per-sample mean training loss."""
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ConfigError(f"accumulation_steps must be a whole number of at least 1, got {accumulation_steps!r}")
        schedule = self._ensure_schedule(dataloader, None, accumulation_steps)
        self.model.train()
        if self.position == 0:
            self._meter = EpochMeter(self.device)
        self._shard = shard_of(dataloader, self.group)
        self.batches_per_epoch = len(self._shard) if self._shard else num_batches(dataloader)
        self.events(Event.EPOCH_START, self, epoch=self.epoch)
        schedule.epoch_start(self.epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        started, self._data_wait = time.perf_counter(), 0.0
        # In-memory inputs come in reused buffers: nothing here holds a batch's inputs past its step.
        batches = epoch_batches(dataloader, seed=self.data_seed, epoch=self.epoch, skip=self.position,
                                reuse=accumulation_steps, shard=self._shard)
        if self._resume_rng is not None:  # skipping batches may have drawn from the global RNG
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        if not self._train_checked:
            self._dataset_labels = check_dataset(dataloader, "training")
        waited = time.perf_counter()
        for window in windows(batches, accumulation_steps):
            self._data_wait += time.perf_counter() - waited  # the time spent getting this window's data
            self._train_step(window)
            if self._interrupted if self.group is None else self._stopping:
                raise _Interrupt(self._interrupted or self._stopping)
            waited = time.perf_counter()
        elapsed = time.perf_counter() - started
        metrics = self._meter.result("train", self.group)
        if not metrics:
            raise DataError("the training data is empty: it yielded no batches")
        trained = self._meter.trained  # every process's; a resumed epoch's first part is not in it
        self.samples_trained, self.train_seconds = self.samples_trained + trained, self.train_seconds + elapsed
        metrics.update(lr=lr, epoch_time=elapsed, samples_per_sec=trained / max(elapsed, 1e-9),
                       data_wait_share=self._data_wait / max(elapsed, 1e-9), memory_bytes=peak_memory(self.device))
        self._epoch_metrics = metrics
        self._record(metrics, learning_rates=lr)
        self.epoch, self.position = self.epoch + 1, 0
        self.events(Event.TRAIN_END, self, metrics=metrics)
        return metrics["train_loss"]

    def _train_step(self, window: list) -> None:
        """One optimizer step: forward, loss, backward over the window's micro-batches, clip, step, schedule.

        Out of memory, the same samples are retried from the first micro-batch, in micro-batches
        of half the size (kept for the rest of the run), with gradients zeroed and the RNG rewound.
        """
        batches = [unpack(batch, self.device) for batch in window]
        # The window's samples on every process: each micro-batch weighs its share of them.
        total = (sum(self._shard.global_size(self.position + i) for i in range(len(window))) if self._shard
                 else sum(n for _, _, n in batches))
        rewind = oom.step_rng_state(self.device)  # a retry replays the step's random draws (dropout)
        window_loss, seen = oom.retrying(lambda: self._accumulate(batches, total),
                                         lambda message: self._smaller_micro_batch(message, batches, rewind))
        self.position += len(window)
        if self.group is not None:  # every process then decides the same (skip, roll back, stop)
            window_loss, stop = self._agreement.wait()
            if stop and not self._stopping:
                self._stopping = self._interrupted or "a signal to another process"
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._clipper(self.step, self._meter.norms == 0)  # None on steps it is not measured
        try:
            self.events.step_event(Event.BEFORE_STEP, self, window_loss, grad_norm)
        except SkipStep:
            if not bool(torch.isfinite(window_loss)):  # bad data is not healed by skipping it every epoch
                check_window(batches, self.epoch, self.position - len(window))
            self._optimizer_step.zero_grad()
            if self.scaler is not None:
                self.scaler.update()  # the scaler expects an update after each unscale_
            return
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self._optimizer_step.step()
        self._optimizer_step.zero_grad()
        self.step += 1
        for loss, n, predicted, targets in seen:
            self._meter.add_batch(loss, n, predicted, targets)
        if grad_norm is not None:
            self._meter.add_grad_norm(grad_norm)
        self.lr_schedule.step_end()
        self.events.step_event(Event.STEP_END, self, window_loss, grad_norm)

    def _accumulate(self, batches: list, total: int) -> tuple[torch.Tensor, list]:
        """Forward and backward over the loaded batches in parts of at most ``micro_batch_size``: (window loss,
        per part (loss, samples, accuracy inputs, targets)). Each part's mean loss weighs its share of the
        window's ``total`` samples, so k parts give exactly the update of one k-times-larger batch, ragged or not."""
        if self.micro_batch_size is not None:
            batches = [part for batch in batches for part in split(batch, self.micro_batch_size)]
        seen, window_loss, last = [], None, len(batches) - 1  # seen: counted only if the step is taken
        for index, (inputs, targets, n) in enumerate(batches):
            with self._net.no_sync() if self.group and index < last else self._all_sync:  # DDP: sync the last only
                logits, loss = self._forward(inputs, targets, check=not self._train_checked,
                                             labels=self._dataset_labels, model=self._net)
                self._train_checked = True
                weighted = loss if n == total else loss * (n / total)
                share = weighted.detach()
                window_loss = share if window_loss is None else window_loss + share
                if self.group and index == last:  # the processes' agreement, in flight during the backward
                    self._agreement = self.group.agree(window_loss, self._interrupted is not None)
                (self.scaler.scale(weighted) if self.scaler else weighted).backward()
            loss = loss.detach()
            seen.append((loss, n, accuracy_inputs(self._kind, logits, self.loss_fn), targets))
        return window_loss, seen

    def _smaller_micro_batch(self, message: str, batches: list, rewind: tuple) -> None:
        """Out of memory: the failed attempt's gradients dropped, the micro-batch halved, the RNG rewound."""
        self._optimizer_step.zero_grad()
        self.micro_batch_size = oom.halve(self, message, [n for _, _, n in batches], self.micro_batch_size,
                                          "micro-batch")
        oom.rewind_rng(rewind, self.device)

    def evaluate(self, dataloader: Iterable) -> tuple[float, float | None]:
        """Per-sample mean loss and accuracy (None when not classifying) over the whole set."""
        metrics = evaluate(self, dataloader, "eval")
        self._epoch_metrics.update(metrics)
        self._record(metrics)
        self.events(Event.EVAL_END, self, metrics=metrics)
        return metrics["eval_loss"], metrics.get("eval_acc")

    def test(self, dataloader: Iterable) -> dict[str, float]:
        """Final metrics on a held-out set: ``{"test_loss", "test_acc"?, "test_samples"}`` and what callbacks
        add to the test record as it is logged (a recipe's MAE, R²); history untouched."""
        record = {"kind": "test", **evaluate(self, dataloader, "test")}
        self.log(record)
        return {k: v for k, v in record.items() if k != "kind"}

    @torch.no_grad()
    def predict(self, data: Any, batch_size: int = 1024) -> torch.Tensor:
        """Model outputs (logits) for a tensor of inputs or a loader of batches, on the CPU."""
        from trainwell.inference import predict

        return predict(self, data, batch_size)

    def _request_stop(self, signal_name: str) -> None:
        """A signal asked to stop: the loop finishes the step in progress, then checkpoints and stops."""
        self._interrupted = signal_name

    # ------------------------------------------------------------------ records

    def log(self, record: dict[str, Any]) -> None:
        """Send one record (a dict with a ``kind``) to every logger among the callbacks."""
        for logger in self._loggers:
            logger.log(record, self.step)

    # ------------------------------------------------------------------ pieces of a step

    def _forward(self, inputs: Any, targets: Any, check: bool = False, labels: torch.Tensor | None = None,
                 model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Model outputs and mean loss; with ``check`` (a set's first batch) problems are explained first.
        ``model``: the DDP-wrapped one to train; evaluation runs the plain model (no collectives)."""
        model = model or self.model
        with self._autocast:
            if check:
                logits, loss, self._kind = first_batch(lambda: call_model(model, inputs),
                                                       lambda out: model_loss(out, targets, self.loss_fn),
                                                       inputs, targets, self.loss_fn, labels)
                return logits, loss
            return model_loss(call_model(model, inputs), targets, self.loss_fn)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (always, unless distributed and not rank 0)."""
        return self.group is None or self.group.is_main

    def _record(self, metrics: Mapping[str, float], **extra: float) -> None:
        for key, value in {**metrics, **extra}.items():
            if key in HISTORY_KEYS:
                self.history[key].append(value)

    def _ensure_schedule(self, dataloader: Iterable, epochs: int | None, accumulation_steps: int) -> ScheduleDriver:
        """Wrap the scheduler once (built-in names need the run's length, known to ``fit``)."""
        self.lr_schedule = ensure_driver(self, dataloader, epochs, accumulation_steps)
        return self.lr_schedule

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The complete training state: every stateful piece's own ``state_dict()`` (see ``trainwell.state``)."""
        return state.capture(self)

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output in place; a mismatch names the offending keys."""
        state.restore(self, saved)

    def save_checkpoint(self, path: str | os.PathLike, *, wait: bool = True,
                        then: Callable[[Path], None] | None = None) -> Path:
        """Write the complete training state to ``path`` atomically (plus a size+sha256 manifest).

        With ``wait=False`` the state is captured now and written on a background thread
        (``then(path)`` runs once it is on disk); ``wait_for_checkpoints()`` waits for it.
        """
        return state.save(self, Path(path), wait=wait, then=then)

    def wait_for_checkpoints(self) -> None:
        """Block until every checkpoint written in the background is on disk (raises its error)."""
        self._writer.wait()

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the complete training state from ``path`` (never runs pickled code)."""
        self.load_state_dict(checkpoint.load(path, map_location=self.device))

    def resume(self, resume: str | os.PathLike) -> Path | None:
        """``"auto"``: the latest valid checkpoint in ``run_dir`` (or a fresh start); else a path."""
        return state.resume(self, resume)

    def notice(self, message: str, warn: bool = False) -> None:
        """Tell the user something plainly: a printed line when verbose (a warning otherwise, for
        what needs attention), and a ``notice`` record."""
        if warn and not self._verbose:
            warnings.warn(message, stacklevel=2)
        self.log({"kind": "notice", "message": message})


class _Interrupt(Exception):
    """Internal: a signal arrived; unwinds to ``fit`` after the step in progress completed."""
