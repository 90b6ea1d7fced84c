"""Seed 004 (Lesson 3.5, production-level training): the XOR example, with trainwell.

The seed's lab builds a ``DataLoader`` (batches, reshuffled every epoch), a ``TrainingMonitor``
(train/val loss history, early stopping with patience, restore the best weights), an 80/10/10
``train_val_test_split`` and ``plot_learning_curves`` (best epoch marked, an overfitting
warning), and trains a 2-4-1 network on noisy XOR with plain gradient descent at lr 1.0,
batch 32, up to 200 epochs, patience 20. The same pieces in trainwell: ``tw.InMemoryLoader``,
``tw.EarlyStopping`` (the monitor: patience, best weights restored), ``tw.train_val_test_split``
and ``tw.plot_learning_curves``; a small callback prints the seed's progress line.

Run it::

    python examples/04_xor_training_monitor.py            # up to 200 epochs, a few seconds
    python examples/04_xor_training_monitor.py --quick    # up to 30 epochs, patience 5
    python examples/04_xor_training_monitor.py --patience 5 --run-dir runs/xor-impatient

What to look at: the split sizes, the batches per epoch, the validation loss falling and the
best epoch, where early stopping stopped and that the best weights came back, the test accuracy,
and learning_curves.png.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import trainwell as tw


def xor_data(repeats: int = 250, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's data: the four XOR points tiled ``repeats`` times, jittered by Gaussian noise.
    (Rows are examples here; the seed's numpy code keeps examples in columns.)"""
    rng = np.random.default_rng(seed)
    points = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    labels = np.array([[0], [1], [1], [0]], dtype=np.float32)
    x = np.tile(points, (repeats, 1)) + rng.normal(0.0, noise, size=(4 * repeats, 2)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(np.tile(labels, (repeats, 1)))


class SeedProgress:
    """Prints the seed's progress line every ``every`` epochs: train, val and best val loss
    (epochs counted from 1, as trainwell counts them; the seed counts from 0)."""

    def __init__(self, epochs: int, every: int = 10):
        self.epochs, self.every, self.best = epochs, every, float("inf")

    def on_epoch_end(self, trainer: Any, metrics: dict) -> None:
        self.best = min(self.best, metrics["eval_loss"])
        if trainer.epoch == 1 or trainer.epoch % self.every == 0 or trainer.epoch == self.epochs:
            print(f"Epoch {trainer.epoch:3d}/{self.epochs}: Train Loss = {metrics['train_loss']:.6f}, "
                  f"Val Loss = {metrics['eval_loss']:.6f}, Best Val = {self.best:.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Seed 004's XOR example with trainwell")
    parser.add_argument("--epochs", type=int, default=200, help="the most epochs to train")
    parser.add_argument("--lr", type=float, default=1.0, help="plain gradient descent, as in the seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--min-delta", type=float, default=1e-3,
                        help="an epoch counts as progress when val loss improves by more than this")
    parser.add_argument("--quick", action="store_true", help="at most 30 epochs, patience 5")
    parser.add_argument("--run-dir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    epochs = min(args.epochs, 30) if args.quick else args.epochs
    patience = min(args.patience, 5) if args.quick else args.patience
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="xor-"))

    x, y = xor_data()
    train, val, test = tw.train_val_test_split(x, y, train=0.8, val=0.1, seed=0)
    print(f"Dataset size: {len(x)} examples\nTrain: {len(train[0])}, Val: {len(val[0])}, Test: {len(test[0])}")
    train_loader = tw.InMemoryLoader(*train, batch_size=args.batch_size, shuffle=True)

    tw.seed_everything(0)
    network = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))  # the seed's TwoLayerNetwork(2, 4, 1)
    # the seed's TrainingMonitor: val-loss history, patience, the best weights restored at the end
    monitor = tw.EarlyStopping(patience=patience, min_delta=args.min_delta, restore_best=True)
    trainer = tw.Trainer(network, torch.optim.SGD(network.parameters(), lr=args.lr), nn.BCEWithLogitsLoss(),
                         seed=0, run_dir=run_dir, callbacks=[monitor, SeedProgress(epochs)])
    print(f"Starting training...\n  Batch size: {args.batch_size}\n  Batches per epoch: {len(train_loader)}\n"
          f"  Max epochs: {epochs}\n  Early stopping patience: {patience}")
    history = trainer.fit(train_loader, tw.InMemoryLoader(*val, batch_size=len(val[0])), epochs=epochs)

    if trainer.stop_reason:
        print(f"\nEarly stopping after epoch {trainer.epoch}: {trainer.stop_reason}")
    if monitor.best_state is not None:
        print(f"Restored best model weights: epoch {monitor.best_epoch}, the last that improved the validation "
              f"loss by more than {args.min_delta:g} (val loss {monitor.best:.6f})")
    curves = tw.plot_learning_curves(history, run_dir / "xor_learning_curves.png")
    print(f"Learning curves: {curves['path']} (lowest validation loss at epoch {curves['best_epoch']}"
          f"{'; warning: possible overfitting' if curves['overfitting'] else ''})")

    result = trainer.test(tw.InMemoryLoader(*test, batch_size=len(test[0])))
    print(f"\n=== Final Test Results ===\nTest Loss: {result['test_loss']:.6f}\n"
          f"Test Accuracy: {result['test_acc']:.2%}")
    print(f"Run directory: {run_dir}")


if __name__ == "__main__":
    main()
