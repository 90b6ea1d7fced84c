"""Seed 001, bonus challenge 1: SGD with momentum written from scratch, matching PyTorch.

The seed's update is

    v <- beta * v + (1 - beta) * grad
    p <- p - lr * v

which is ``torch.optim.SGD(params, lr, momentum=beta, dampening=beta)``, NOT torch's default
``dampening=0`` (``v <- beta * v + grad``). With a steady gradient g the seed's velocity settles
at g, torch's default at g / (1 - beta): the same ``lr`` moves the default 1 / (1 - beta) times
further (10x at beta = 0.9), so the seed at ``lr`` behaves like the default at ``lr * (1 - beta)``.

One more detail, from ``torch/optim/sgd.py`` (``_single_tensor_sgd``): on the first step torch
does not start from v = 0; it sets the buffer to the gradient itself, undampened
(``buf = grad.clone()``), and only later steps are ``buf.mul_(beta).add_(grad, alpha=1 - dampening)``.
A zero-started v would give (1 - beta) * grad on step one (a 10x smaller first step at 0.9).
``SGDMomentum`` does what torch does, with the same operations in the same order, so on CPU it
matches torch bitwise (tests/test_examples.py checks every parameter with ``torch.equal`` over
200 steps).

Run it: ``python examples/sgd_momentum_from_scratch.py [--quick] [--run-dir DIR]``: it trains
an MLP on scikit-learn's bundled digits with trainwell, using this optimizer, and prints the
per-epoch table and the test accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable

import torch


class SGDMomentum(torch.optim.Optimizer):
    """SGD with dampened momentum: ``v <- beta*v + (1-beta)*grad; p <- p - lr*v``, with torch's
    first step (``v = grad``). Equal, bitwise, to ``torch.optim.SGD(lr=lr, momentum=beta,
    dampening=beta)``. No weight decay, Nesterov or maximize: the seed's formula only."""

    def __init__(self, params: Iterable, lr: float = 0.01, beta: float = 0.9):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta = group["lr"], group["beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = p.grad.detach().clone()  # torch: the first v is the gradient
                else:
                    state["momentum_buffer"].mul_(beta).add_(p.grad, alpha=1 - beta)
                p.add_(state["momentum_buffer"], alpha=-lr)
        return loss


def main() -> None:
    import trainwell as tw
    from sklearn.datasets import load_digits
    from torch import nn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs instead of 20")
    parser.add_argument("--run-dir", default=None, help="where the run is written (default: a temporary directory)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.9)
    args = parser.parse_args()
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="sgd-momentum-")

    tw.seed_everything(0)
    digits = load_digits()  # 1,797 8x8 images of handwritten digits, shipped with scikit-learn
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    train, val, test = tw.train_val_test_split(x, y, train=0.8, val=0.1, seed=0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    trainer = tw.Trainer(model, SGDMomentum(model.parameters(), lr=args.lr, beta=args.beta), nn.CrossEntropyLoss(),
                         seed=0, run_dir=run_dir, verbose=True)
    trainer.fit(tw.InMemoryLoader(*train, batch_size=32), tw.InMemoryLoader(*val, batch_size=512),
                epochs=3 if args.quick else 20)
    result = trainer.test(tw.InMemoryLoader(*test, batch_size=512))
    print(f"SGDMomentum(lr={args.lr}, beta={args.beta}) test accuracy: {result['test_acc']:.2%}")
    print(f"Run directory: {run_dir}")


if __name__ == "__main__":
    main()
