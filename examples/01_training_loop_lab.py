"""Seed 001 (Lab 3, The Training Loop - From Theory to Production), with trainwell.

The lab's two exercises and its bonus challenges, on scikit-learn's bundled digits (1,797 8x8
handwritten digits, an MLP 64-128-10):

1. Basic training: train/validate each epoch, loss and accuracy, the best model saved, and
   loading a checkpoint to resume (``fit(resume="auto")``: it ends bitwise where an
   uninterrupted run ends).
2. Advanced: ``EarlyStopping``, gradient clipping (``grad_clip_norm``, the lab's
   GradientClipper), the three schedules (StepLR, CosineAnnealingLR, ReduceLROnPlateau) and
   warmup, AMP (bf16 autocast, which runs on CPU too), gradient-norm tracking, logging.
3. Bonus: SGD with momentum from scratch matching torch (``sgd_momentum_from_scratch.py``),
   the learning-rate finder, gradient flow per layer, a custom callback. (Curriculum learning
   is not shown here; the lab's other losses, MSE and pairwise ranking, are the ``regression``
   and ``ranking`` recipes: ``trainwell train regression``, ``trainwell train ranking``.)

Run it::

    python examples/01_training_loop_lab.py            # 10 epochs per experiment, about a minute
    python examples/01_training_loop_lab.py --quick    # 4 epochs, seconds

What to look at: the per-epoch table and "best model saved"; "resumed == uninterrupted: True";
where early stopping stops; each schedule's learning rate per epoch; the gradient norms before
clipping; bf16 vs fp32 accuracy; the suggested learning rate; the per-layer gradient norms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

import trainwell as tw
from sgd_momentum_from_scratch import SGDMomentum  # this folder is on sys.path when the script runs


def data() -> tuple:
    """Digits, scaled to [0, 1] and split 80/10/10 with a fixed seed: 1,438 / 180 / 179."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    return tw.train_val_test_split(x, torch.tensor(digits.target), train=0.8, val=0.1, seed=0)


def loaders(splits: tuple) -> tuple:
    train, val, test = splits
    return (tw.InMemoryLoader(*train, batch_size=32), tw.InMemoryLoader(*val, batch_size=512),
            tw.InMemoryLoader(*test, batch_size=512))


def mlp() -> nn.Module:
    tw.seed_everything(0)  # the same initial weights for every experiment
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))


def trainer_for(model: nn.Module, optimizer: Any = None, **options: Any) -> tw.Trainer:
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
    return tw.Trainer(model, optimizer, nn.CrossEntropyLoss(), seed=0, **options)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def exercise_1(splits: tuple, epochs: int, run_dir: Path) -> None:
    """Train/validate, best checkpoint, resume."""
    print("=== Exercise 1: train / validate, best checkpoint, resume ===")
    train, val, test = loaders(splits)
    half = epochs // 2
    print(f"A run stopped after {half} epochs (as if it had crashed):")
    trainer_for(mlp(), run_dir=run_dir / "basic", verbose=True, grad_flow_every=10).fit(train, val, epochs=half)
    print(f"The same command again with resume='auto': it loads the last checkpoint and carries on to {epochs}:")
    resumed = trainer_for(mlp(), run_dir=run_dir / "basic", verbose=True, grad_flow_every=10)
    resumed.fit(train, val, epochs=epochs, resume="auto")
    straight = trainer_for(mlp())
    straight.fit(train, val, epochs=epochs)
    print(f"resumed == uninterrupted (every weight, bitwise): {same_weights(resumed.model, straight.model)}")
    result = resumed.test(test)
    print(f"Test accuracy: {result['test_acc']:.2%}; best weights in {run_dir / 'basic' / 'model-best.safetensors'}\n")


def exercise_2(splits: tuple, epochs: int, run_dir: Path) -> None:
    """Early stopping, clipping, the three schedules and warmup, AMP, gradient norms."""
    print("=== Exercise 2: early stopping, clipping, schedules, AMP, gradient norms ===")
    train, val, _ = loaders(splits)
    steps = epochs * len(train)
    schedules = {
        "StepLR(step_size=2, gamma=0.5)": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
        "CosineAnnealingLR(T_max=epochs)": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
        "ReduceLROnPlateau(patience=1)": lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1,
                                                                                                 factor=0.5),
        f"warmup-cosine ({steps // 5} warmup steps)": lambda opt: ("warmup-cosine", {"warmup_steps": steps // 5}),
    }
    for name, make in schedules.items():
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        trainer = trainer_for(model, optimizer, scheduler=make(optimizer), grad_clip_norm=1.0)
        trainer.fit(train, val, epochs=epochs)
        lrs = " ".join(f"{lr:.3g}" for lr in trainer.history["learning_rates"])
        print(f"{name:34s} lr per epoch: {lrs}\n{'':34s} val loss {trainer.history['eval_loss'][-1]:.4f}, "
              f"grad norm before clipping (epoch means): "
              + " ".join(f"{g:.2f}" for g in trainer.history["grad_norm"]))

    model = mlp()  # a learning rate that overfits fast, so that early stopping has something to do
    stopper = tw.EarlyStopping(patience=2, restore_best=True)
    trainer = trainer_for(model, torch.optim.Adam(model.parameters(), lr=0.02), callbacks=[stopper],
                          run_dir=run_dir / "early-stopping")
    trainer.fit(train, val, epochs=4 * epochs)
    print(f"EarlyStopping(patience=2): {trainer.stop_reason or 'did not stop'}; "
          f"trained {trainer.epoch} of {4 * epochs} epochs, best weights (epoch {stopper.best_epoch}) restored")

    for precision in ("32", "bf16"):  # AMP: bf16 autocast works on CPU; "16" needs CUDA (a GradScaler)
        trainer = trainer_for(mlp(), precision=precision)
        start = time.perf_counter()
        trainer.fit(train, val, epochs=epochs)
        print(f"precision={precision:4s}: val accuracy {trainer.history['eval_acc'][-1]:.2%}, "
              f"{time.perf_counter() - start:.1f}s (on a CPU bf16 is about accuracy and memory, not speed)")
    print(f"Logs: {run_dir / 'early-stopping'} holds metrics.jsonl (every 50 steps and every epoch), epochs.csv, "
          f"TensorBoard files\n")


class PrintEveryEpoch:
    """The lab's callback system: an object with the hooks it needs (here one), called by name."""

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        print(f"  callback: epoch {trainer.epoch} train loss {metrics['train_loss']:.4f} lr {metrics['lr']:.3g}")


def bonus(splits: tuple, epochs: int, run_dir: Path) -> None:
    """SGD with momentum from scratch, the LR finder, gradient flow, a callback."""
    print("=== Bonus challenges ===")
    train, val, _ = loaders(splits)
    mine = mlp()  # each trainer is built just before its fit: the seed it sets also drives dropout's masks
    a = trainer_for(mine, SGDMomentum(mine.parameters(), lr=0.1, beta=0.9), callbacks=[PrintEveryEpoch()])
    a.fit(train, epochs=2)
    torchs = mlp()
    b = trainer_for(torchs, torch.optim.SGD(torchs.parameters(), lr=0.1, momentum=0.9, dampening=0.9))
    b.fit(train, epochs=2)
    print(f"1. SGDMomentum (v <- 0.9 v + 0.1 g) == torch SGD(momentum=0.9, dampening=0.9) after {a.step} steps, "
          f"bitwise: {same_weights(mine, torchs)}")

    model = mlp()
    finder = trainer_for(model, torch.optim.Adam(model.parameters(), lr=1e-3))
    result = tw.lr_find(finder, train, min_lr=1e-5, max_lr=10.0, num_steps=40)
    result.plot(run_dir / "lr_find.png")
    print(f"2. LR range test: {len(result.lrs)} steps from {result.lrs[0]:.0e}; suggested lr {result.suggestion:.2e} "
          f"(plot: {run_dir / 'lr_find.png'})")

    records = [json.loads(line) for line in (run_dir / "basic" / "metrics.jsonl").read_text().splitlines()]
    flow = [r for r in records if r["kind"] == "layers"]
    if flow:
        first, last = flow[0], flow[-1]
        print(f"3. Gradient flow (per-layer gradient norm, step {first['step']} -> step {last['step']}):")
        for layer, stats in last["layers"].items():
            print(f"     {layer:10s} {first['layers'][layer]['grad_norm']:.4f} -> {stats['grad_norm']:.4f}")
    print("4. Callbacks: PrintEveryEpoch above is one (see docs/api.md, Events and callbacks)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed 001's training-loop lab with trainwell")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per experiment")
    parser.add_argument("--quick", action="store_true", help="4 epochs per experiment")
    parser.add_argument("--run-dir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    epochs = 4 if args.quick else args.epochs
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="training-loop-lab-"))
    splits = data()
    exercise_1(splits, epochs, run_dir)
    exercise_2(splits, epochs, run_dir)
    bonus(splits, epochs, run_dir)
    print(f"\nRun directory: {run_dir}")


if __name__ == "__main__":
    main()
