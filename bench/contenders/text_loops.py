"""The four fine-tunes ``bench/text.py`` interleaves, each one epoch over the same training subset.

Every loop trains all-MiniLM-L6-v2 with a fresh 2-class head (seeded, so the same head in one
repetition), batch 32, AdamW lr 2e-5, weight decay 0.01 off for biases and LayerNorm weights,
linear warmup over 10% of the steps then linear decay to 0, no gradient clipping, fp32, token
ids already made by the recipe's tokenizer (max length 128, the recipe's cache), each batch
padded to its own longest snippet. Each returns the wall time from the epoch's start (before its
first batch is loaded) to the end of its last optimizer step, and the padded tokens it trained on.

- ``trainwell``: ``trainwell train text-classify``'s path: the recipe's ``build()`` (its
  DataLoader and collate, fused AdamW, the ``linear`` schedule), ``tw.Trainer`` with a run
  directory and every default (health guard, gradient flow, logging, epoch checkpoint, the
  CPU memory probe the command line adds, the Hugging Face export at the end);
  The recipe's default batches snippets of similar length together (``--group-by-length``);
- ``trainwell_random``: the same with ``--no-group-by-length``: batches in plain random order;
- ``trainwell_api``: the same ``tw.Trainer`` as a library user builds it, without the command
  line's CPU memory probe (a torch profiler over steps 2-4 of every fit);
- ``hf_default``: ``transformers.Trainer`` at its defaults with ``DataCollatorWithPadding``
  (only the fine-tune's own settings given, and ``max_grad_norm=0``: no clipping, as the others);
- ``hf_fast``: the same plus the fastest CPU settings its docs give that keep the math:
  ``train_sampling_strategy="group_by_length"``, ``disable_tqdm``, no logging or saving,
  ``dataloader_pin_memory=False`` (its default optimizer is already ``adamw_torch_fused``);
- ``hand``: a hand-written loop: a DataLoader with a pad-to-longest collate, fused AdamW,
  ``LambdaLR``, the loss kept on the device.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from trainwell.config import TrainConfig, validate  # noqa: E402
from trainwell.recipes import get_recipe, recipe_defaults  # noqa: E402
from trainwell.recipes import text as recipe  # noqa: E402
from trainwell.runtime import seed_everything  # noqa: E402

LR, WEIGHT_DECAY, BATCH, WARMUP_RATIO = 2e-5, 0.01, 32, 0.1


@dataclass
class Workload:
    """The recipe's tokenized split, cut to the bench's training subset and evaluation subset."""

    config: TrainConfig
    train: tuple[list[np.ndarray], torch.Tensor]
    val: tuple[list[np.ndarray], torch.Tensor]
    names: list[str]
    model_dir: Any
    tokenizer: Any
    pad: int


def workload(train_samples: int, eval_samples: int) -> Workload:
    """The first ``train_samples`` of the recipe's training split (its fixed split, its token cache)."""
    config = validate({**recipe_defaults("text-classify"), "recipe": "text-classify", "device": "cpu",
                       "num_samples": train_samples, "epochs": 1})
    tokenizer, model_dir = recipe.load_tokenizer(config)
    corpus = recipe.corpus_for(config, tokenizer, model_dir)
    (ids, labels), (val_ids, val_labels), _ = corpus.splits
    return Workload(config, (ids[:train_samples], labels[:train_samples]),
                    (val_ids[:eval_samples], val_labels[:eval_samples]), corpus.names, model_dir, tokenizer,
                    recipe.pad_id(tokenizer))


@dataclass
class Timing:
    seconds: float
    steps: int
    samples: int
    tokens: int  # padded tokens (batch rows x batch width) fed to the model


class Counted:
    """A collate function that also adds up the padded tokens of the batches it made."""

    def __init__(self, collate: Callable):
        self.collate, self.tokens = collate, 0

    def __call__(self, items: list) -> Any:
        batch = self.collate(items)
        inputs = batch[0] if isinstance(batch, tuple) else batch
        self.tokens += inputs["input_ids"].numel()
        return batch


class StepClock:
    """Start at the epoch's start, stop at the end of optimizer step ``steps``."""

    def __init__(self, steps: int):
        self.steps, self.count, self.start, self.end = steps, 0, None, None

    def begin(self) -> None:
        if self.start is None:  # the first epoch's start; later epochs keep it
            self.start = time.perf_counter()

    def step(self) -> None:
        self.count += 1
        if self.count == self.steps:
            self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError(f"the clock saw {self.count} of {self.steps} steps")
        return self.end - self.start


def steps_of(work: Workload) -> int:
    return -(-len(work.train[0]) // BATCH)


def fresh_model(work: Workload, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return recipe.load_model(work.model_dir, work.names)


def run_trainwell(work: Workload, seed: int, run_dir: str, probe: bool = True) -> tuple[Timing, torch.nn.Module]:
    from trainwell import memory
    from trainwell.trainer import Trainer

    config = replace(work.config, seed=seed)
    seed_everything(seed)  # as `trainwell train` does before build()
    parts = get_recipe("text-classify").build(config, torch.device("cpu"))
    counted = Counted(parts.train.collate_fn)
    parts.train.collate_fn = counted
    clock = StepClock(steps_of(work))

    class Clock:
        def on_epoch_start(self, trainer: Any, **_: Any) -> None:
            clock.begin()

        def on_step_end(self, trainer: Any, *_: Any, **__: Any) -> None:
            clock.step()

    probes = [memory.MemoryProbe(cpu=True)] if probe else []  # `trainwell train` adds it (docs/memory.md)
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip, device="cpu",
                      precision=config.precision, callbacks=[*parts.callbacks, *probes, Clock()],
                      run_dir=run_dir, seed=seed, checkpoint_every_steps=config.checkpoint_every,
                      log_every_steps=config.log_every, keep_checkpoints=config.keep_checkpoints, verbose=False)
    trainer.fit(parts.train, None, epochs=1)
    return Timing(clock.seconds, clock.count, len(work.train[0]), counted.tokens), trainer.model


class HFData(torch.utils.data.Dataset):
    """What a tokenized ``datasets.Dataset`` hands the Trainer: dicts of lists."""

    def __init__(self, ids: list[np.ndarray], labels: torch.Tensor):
        self.ids, self.labels = [row.tolist() for row in ids], labels.tolist()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "attention_mask": [1] * len(self.ids[i]), "labels": self.labels[i]}


def run_hf(work: Workload, seed: int, run_dir: str, fast: bool, epochs: int = 1) -> tuple[Timing, torch.nn.Module]:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    model = fresh_model(work, seed)
    clock = StepClock(steps_of(work) * epochs)

    class Clock(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            clock.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            clock.step()

    options = dict(output_dir=run_dir, per_device_train_batch_size=BATCH, num_train_epochs=epochs, learning_rate=LR,
                   weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", warmup_steps=WARMUP_RATIO,
                   max_grad_norm=0.0, seed=seed, use_cpu=True)
    if fast:
        options.update(train_sampling_strategy="group_by_length", disable_tqdm=True, logging_strategy="no",
                       save_strategy="no", report_to="none", dataloader_pin_memory=False)
    collate = Counted(DataCollatorWithPadding(work.tokenizer))
    trainer = Trainer(model=model, args=TrainingArguments(**options), train_dataset=HFData(*work.train),
                      data_collator=collate, processing_class=work.tokenizer, callbacks=[Clock()])
    trainer.train()
    return Timing(clock.seconds, clock.count, len(work.train[0]) * epochs, collate.tokens), model


def pad_batch(pad: int) -> Callable:
    def collate(items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, :len(ids)] = torch.from_numpy(ids)
            mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}, torch.tensor([y for _, y in items])

    return collate


def run_hand(work: Workload, seed: int, run_dir: str) -> tuple[Timing, torch.nn.Module]:
    model = fresh_model(work, seed)
    decay = [p for n, p in model.named_parameters() if not n.endswith(recipe.NO_DECAY)]
    rest = [p for n, p in model.named_parameters() if n.endswith(recipe.NO_DECAY)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": rest, "weight_decay": 0.0}], lr=LR, fused=True)
    total = steps_of(work)
    warmup = int(np.ceil(WARMUP_RATIO * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    collate = Counted(pad_batch(work.pad))
    data = list(zip(work.train[0], work.train[1].tolist()))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(seed))
    clock = StepClock(total)
    model.train()
    loss_sum = torch.zeros(())
    clock.begin()
    for inputs, labels in loader:
        loss = F.cross_entropy(model(**inputs).logits, labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach() * len(labels)
        clock.step()
    float(loss_sum)
    return Timing(clock.seconds, clock.count, len(work.train[0]), collate.tokens), model


def accuracy(model: torch.nn.Module, work: Workload, batch_size: int = 64) -> float:
    """Accuracy (%) on the evaluation subset, the same code for every contender's model."""
    ids, labels = work.val
    collate = pad_batch(work.pad)
    model.eval()
    correct = 0
    with torch.no_grad():
        for lo in range(0, len(ids), batch_size):
            inputs, y = collate(list(zip(ids[lo:lo + batch_size], labels[lo:lo + batch_size].tolist())))
            correct += int((model(**inputs).logits.argmax(-1) == y).sum())
    return 100.0 * correct / len(ids)


CONTENDERS: dict[str, Callable[[Workload, int, str], tuple[Timing, torch.nn.Module]]] = {
    "trainwell": run_trainwell,
    "trainwell_api": lambda work, seed, run_dir: run_trainwell(work, seed, run_dir, probe=False),
    "trainwell_random": lambda work, seed, run_dir: run_trainwell(  # `trainwell train --no-group-by-length`
        replace(work, config=replace(work.config, group_by_length=False)), seed, run_dir),
    "hf_default": lambda work, seed, run_dir: run_hf(work, seed, run_dir, fast=False),
    "hf_fast": lambda work, seed, run_dir: run_hf(work, seed, run_dir, fast=True),
    "hand": run_hand,
}


def run(name: str, work: Workload, seed: int) -> tuple[Timing, float]:
    """One contender's epoch in a fresh temporary run directory, then its accuracy."""
    with tempfile.TemporaryDirectory(prefix=f"tw-text-{name}-") as run_dir:
        timing, model = CONTENDERS[name](work, seed, run_dir)
    return timing, accuracy(model, work)
