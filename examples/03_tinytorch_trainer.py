"""Seed 003 (TinyTorch Module 08, Training): the Trainer API and the memory analysis, with trainwell.

The seed builds ``CosineSchedule``, ``clip_grad_norm``, and a ``Trainer`` with ``train_epoch``
(gradient accumulation included), ``evaluate``, ``save_checkpoint`` / ``load_checkpoint`` and a
``history``, used in a hand-written epoch loop; then it asks how much memory training takes
("4-6x the model size", Q1: Adam vs SGD). trainwell has the same API (``tw.Trainer``,
``tw.CosineSchedule``, ``tw.clip_grad_norm``), so the seed's loop runs as written; the memory
analysis is ``trainwell.memory.estimate`` for the real model, checked against a measurement
(``trainwell.memory.MemoryProbe``).

Run it::

    python examples/03_tinytorch_trainer.py            # 10 epochs of the seed's loop on digits
    python examples/03_tinytorch_trainer.py --quick    # 4 epochs

What to look at: the clipping arithmetic (seed: [100, 200, 50] -> norm 230), the learning rate
falling along the cosine, the per-epoch losses, that a run resumed from a checkpoint ends with
exactly the weights of the uninterrupted one, and the memory table (SGD with momentum vs Adam,
estimate vs measured).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

import trainwell as tw
import trainwell.memory  # tw.memory: estimate() and MemoryProbe


def data() -> tuple:
    """scikit-learn's bundled digits (1,797 8x8 images), split 80/10/10."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    return tw.train_val_test_split(x, torch.tensor(digits.target), train=0.8, val=0.1, seed=0)


def make_trainer(epochs: int, **options) -> tw.Trainer:
    """The seed's setup: SGD(lr=0.1, momentum=0.9), CosineSchedule(0.1 -> 0.01), clipping at 1.0."""
    tw.seed_everything(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = tw.CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=epochs)
    return tw.Trainer(model, optimizer, nn.CrossEntropyLoss(), scheduler, grad_clip_norm=1.0, seed=0, **options)


def clipping_demo() -> None:
    """Seed 003's worked example: gradients [100, 200, 50], global norm 230, max_norm 1.0."""
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([100.0, 200.0, 50.0])
    norm = tw.clip_grad_norm([p], max_norm=1.0)
    print(f"clip_grad_norm([100, 200, 50], max_norm=1.0) -> returns {norm:.1f} (the seed rounds it to 230), grads "
          f"{[round(g, 3) for g in p.grad.tolist()]} (norm {p.grad.norm():.3f}: direction kept)\n")


def seed_loop(trainer: tw.Trainer, train, val, epochs: int, ckpt_dir: Path, start: int = 0) -> None:
    """The seed's loop, as written there (plus a print): train_epoch, evaluate, save_checkpoint."""
    for epoch in range(start, epochs):
        train_loss = trainer.train_epoch(train, accumulation_steps=2)  # effective batch 2 x 32
        eval_loss, accuracy = trainer.evaluate(val)
        trainer.save_checkpoint(ckpt_dir / f"checkpoint_{epoch}.ckpt")
        print(f"epoch {epoch}: lr {trainer.history['learning_rates'][-1]:.4f}  train loss {train_loss:.4f}  "
              f"eval loss {eval_loss:.4f}  accuracy {accuracy:.2%}  (step {trainer.step})")


def memory_table(train) -> None:
    """Seed 003's Q1 for this model: parameters + gradients + optimizer state (+ activations)."""
    print("\nMemory (seed 003 Q1), estimated by trainwell.memory.estimate for this MLP, batch 32:")
    x, y = train[0][:32], train[1][:32]
    for name, make in (("SGD+momentum", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
                       ("Adam", lambda ps: torch.optim.Adam(ps, lr=1e-3))):
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        sizes = tw.memory.estimate(model, make(model.parameters()), x, targets=y, loss_fn=nn.CrossEntropyLoss())
        parts = "  ".join(f"{k.replace('_', ' ')} {sizes[k] / 1024:.1f} KB" for k in trainwell.memory.PARTS)
        print(f"  {name:13s} {parts}\n  {'':13s} total {sizes['total'] / 1024:.1f} KB = "
              f"{sizes['total'] / sizes['parameters']:.1f}x the model")
    print("  (total = parameters + gradients + state + the larger of activations and the optimizer step's\n"
          "   temporaries: backward frees the activations before the optimizer steps)")


def measured_peak(train, val, run_dir: Path) -> None:
    """The estimate against the training peak MemoryProbe measures (torch's CPU profiler) in a fit."""
    trainer = make_trainer(1, run_dir=run_dir, callbacks=[tw.memory.MemoryProbe()])
    trainer.fit(tw.InMemoryLoader(*train, batch_size=32), tw.InMemoryLoader(*val, batch_size=512), epochs=1)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    memory = next((r for r in records if r["kind"] == "memory"), None)
    if memory is None:
        print("  (no measurement: the probe measures CPU and CUDA only, and one profiler at a time)")
        return
    estimated, measured = memory["estimated"]["total"], memory["measured_peak"]
    print(f"  SGD+momentum in a real fit: estimated {estimated / 1024:.1f} KB, measured peak {measured / 1024:.1f} KB "
          f"over {memory['steps']} steps ({estimated / measured - 1:+.0%}); written to {run_dir / 'metrics.jsonl'}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed 003's Trainer API and memory analysis with trainwell")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="4 epochs")
    parser.add_argument("--run-dir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    epochs = 4 if args.quick else args.epochs
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="tinytorch-"))
    ckpt_dir = run_dir / "manual_checkpoints"
    train, val, _test = data()
    train_data, val_data = tw.InMemoryLoader(*train, batch_size=32), tw.InMemoryLoader(*val, batch_size=512)

    clipping_demo()
    print(f"The seed's loop, {epochs} epochs (CosineSchedule 0.1 -> 0.01, grad_clip_norm=1.0, accumulation 2):")
    trainer = make_trainer(epochs)
    seed_loop(trainer, train_data, val_data, epochs, ckpt_dir)
    print(f"trainer.epoch={trainer.epoch} trainer.step={trainer.step} history keys: {sorted(trainer.history)}")

    half = epochs // 2
    print(f"\nResume: a new trainer loads checkpoint_{half - 1}.ckpt and runs epochs {half}..{epochs - 1}:")
    resumed = make_trainer(epochs)
    resumed.load_checkpoint(ckpt_dir / f"checkpoint_{half - 1}.ckpt")
    seed_loop(resumed, train_data, val_data, epochs, run_dir / "resumed_checkpoints", start=half)
    same = all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))
    print(f"Resumed weights identical to the uninterrupted run: {same}")

    memory_table(train)
    measured_peak(train, val, run_dir / "measured")
    print(f"\nRun directory: {run_dir}")


if __name__ == "__main__":
    main()
