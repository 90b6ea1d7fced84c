"""Seed 000 (Module 01, Training Fundamentals): ``mnist_from_scratch.py``, with trainwell.

The seed's lab: a 784-256-128-10 MLP (235,146 parameters) learns handwritten digits with Adam
and cross-entropy; ``--gpu``, ``--epochs``, ``--lr`` and ``--batch-size`` are the knobs to play
with, and the point is to see the four-step loop (forward, loss, backward, optimizer step)
work, and to feel the GPU vs CPU speed difference. Here the loop is ``tw.Trainer``: the same
four steps, plus validation, checkpoints, learning curves and a health verdict in the words of
the seed's "What to watch for" table. Full MNIST ships inside an installed package (no download).

Run it::

    python examples/00_mnist_from_scratch.py                   # 5 epochs on CPU, ~98% test accuracy
    python examples/00_mnist_from_scratch.py --gpu              # the same on CUDA
    python examples/00_mnist_from_scratch.py --lr 0.01          # watch for instability
    python examples/00_mnist_from_scratch.py --compare-devices  # samples/s on every device present
    python examples/00_mnist_from_scratch.py --quick            # 5,000 images, 1 epoch: seconds

What to look at: the parameter count, the per-epoch table (training loss falling, validation
accuracy rising), samples/s, the test accuracy, and the health verdict at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import trainwell as tw
from trainwell.datasets import load_mnist

MEAN, STD = 0.1307, 0.3081  # MNIST's training-set pixel statistics


def mlp() -> nn.Module:
    """The seed's network: 784 -> 256 -> 128 -> 10 with ReLU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def mnist(quick: bool) -> tuple:
    """(train, val, test) pairs of standardised float images [N, 784] and labels: 54k/6k/10k (quick: 5k/1k/2k)."""
    arrays = load_mnist()
    images, labels = torch.from_numpy(arrays.train_images), torch.from_numpy(arrays.train_labels)
    train, val, _ = tw.train_val_test_split(images, labels, train=0.9, val=0.1, seed=0)
    test = (torch.from_numpy(arrays.test_images), torch.from_numpy(arrays.test_labels))
    if quick:
        train, val, test = ((x[:n], y[:n]) for (x, y), n in zip((train, val, test), (5000, 1000, 2000)))
    return tuple((x.reshape(len(x), -1).float().div(255).sub(MEAN).div(STD), y) for x, y in (train, val, test))


def compare_devices(train: tuple, batch_size: int, steps: int) -> None:
    """Seed 000's 'GPU vs CPU': the same model trained for ``steps`` steps on each device present."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
        ["mps"] if torch.backends.mps.is_available() else [])
    x, y = (t[: steps * batch_size] for t in train)
    print(f"\nSpeed: {len(x):,} images, batch {batch_size}, on {', '.join(devices)}")
    for device in devices:
        tw.seed_everything(0)
        model = mlp()
        trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss(),
                             device=device, seed=0)
        start = time.perf_counter()
        trainer.fit(tw.InMemoryLoader(x, y, batch_size=batch_size), epochs=1)
        print(f"  {device:5s} {len(x) / (time.perf_counter() - start):>10,.0f} samples/s "
              f"(final loss {trainer.history['train_loss'][-1]:.3f})")
    if len(devices) == 1:
        print("  (no GPU here: with one, --gpu and this comparison show the difference the seed talks about)")


def main() -> int:
    parser = argparse.ArgumentParser(description="Seed 000's MNIST MLP, trained with trainwell")
    parser.add_argument("--gpu", action="store_true", help="train on CUDA")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="5,000 training images, 1 epoch")
    parser.add_argument("--run-dir", default=None, help="default: runs/example-mnist-<time>")
    parser.add_argument("--compare-devices", action="store_true", help="also time training on every device present")
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: no CUDA device here; install a CUDA build of torch, or leave out --gpu", file=sys.stderr)
        return 2
    epochs = 1 if args.quick else args.epochs
    run_dir = Path(args.run_dir or f"runs/example-mnist-{time.strftime('%Y%m%d-%H%M%S')}")

    train, val, test = mnist(args.quick)
    tw.seed_everything(0)
    model = mlp()
    print(f"Model: {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"{len(train[0]):,} training / {len(val[0]):,} validation / {len(test[0]):,} test images")
    print("Each step: 1. forward (images -> logits)  2. loss (cross-entropy)  3. backward (gradients)  "
          "4. optimizer step (Adam)\n")
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=args.lr), nn.CrossEntropyLoss(),
                         device="cuda" if args.gpu else "cpu", seed=0, run_dir=run_dir, verbose=True)
    trainer.fit(tw.InMemoryLoader(*train, batch_size=args.batch_size), tw.InMemoryLoader(*val, batch_size=1024),
                epochs=epochs)
    result = trainer.test(tw.InMemoryLoader(*test, batch_size=1024))
    print(f"\nTest accuracy: {result['test_acc']:.2%} (loss {result['test_loss']:.4f}) on {result['test_samples']:,} "
          f"images; {trainer.history['samples_per_sec'][-1]:,.0f} samples/s on {trainer.device}")

    print("\nWhat to watch for (seed 000): training loss decreasing, test accuracy close to train, "
          "loss values 0.1-2.0 (not NaN). trainwell's verdict:")
    for finding in json.loads((run_dir / "summary.json").read_text())["health"]:
        print(f"  {finding['severity'].upper()}: {finding['title']}\n    {finding['evidence']}\n    "
              f"Next: {finding['suggestion']}")
    if args.compare_devices:
        compare_devices(train, args.batch_size, steps=50 if args.quick else 300)
    print(f"\nWrote {run_dir}: model.safetensors, learning_curves.png, metrics.jsonl, summary.json, checkpoints/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
