"""A small training job for the distributed tests: run it under torchrun (or alone, as the
one-process reference). Rank 0 writes the final weights and the metrics to OUT/final.safetensors
and OUT/history.json."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainwell as tw


class Slow(tw.Callback):
    """Sleeps after each step, so a test can kill the job mid-run; optionally NaN on one rank."""

    def __init__(self, sleep: float):
        self.sleep = sleep

    def on_step_end(self, trainer, **_):
        time.sleep(self.sleep)


class FailOnRank(tw.Callback):
    """Raises on one rank at one step, as a bug in a user's callback would."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_step_end(self, trainer, **_):
        if trainer.step == 3 and int(os.environ.get("RANK", "0")) == self.rank:
            raise RuntimeError(f"rank {self.rank} failed on purpose")


class NanOnRank(nn.Module):
    """Wraps a model: at one optimizer step, rank ``rank``'s output becomes NaN."""

    def __init__(self, inner: nn.Module, rank: int, at_call: int):
        super().__init__()
        self.inner, self.rank, self.at_call, self.calls = inner, rank, at_call, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at_call and int(os.environ.get("RANK", "0")) == self.rank:
                out = out * float("nan")
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=203)
    parser.add_argument("--loader", choices=("memory", "dataloader"), default="memory")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--nan-rank", type=int, default=None)
    parser.add_argument("--fail-rank", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tw.seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(args.samples, 10, generator=g), torch.randint(0, 3, (args.samples,), generator=g)
    val_x, val_y = torch.randn(51, 10, generator=g), torch.randint(0, 3, (51,), generator=g)
    model: nn.Module = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    if args.nan_rank is not None:
        model = NanOnRank(model, args.nan_rank, at_call=5)
    params = model.parameters()
    optimizer = torch.optim.Adam(params, lr=1e-2) if args.optimizer == "adam" else torch.optim.SGD(params, lr=0.1)
    if args.loader == "memory":
        train = tw.InMemoryLoader(x, y, batch_size=args.batch_size)
    else:
        train = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    val = tw.InMemoryLoader(val_x, val_y, batch_size=16, shuffle=False)
    callbacks = [Slow(args.sleep)] if args.sleep else []
    if args.fail_rank is not None:
        callbacks.append(FailOnRank(args.fail_rank))
    trainer = tw.Trainer(model, optimizer, nn.CrossEntropyLoss(), device="cpu", seed=0, run_dir=args.run_dir,
                         callbacks=callbacks, checkpoint_every_steps=args.checkpoint_every, log_every_steps=5)
    trainer.fit(train, val, epochs=args.epochs, accumulation_steps=args.accumulate,
                resume="auto" if args.run_dir else None)
    test = trainer.test(val)
    if trainer.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, args.out / "final.safetensors")
        (args.out / "history.json").write_text(json.dumps({"history": trainer.history, "test": test,
                                                           "step": trainer.step}))


if __name__ == "__main__":
    main()
