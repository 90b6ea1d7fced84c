"""What every contender shares: arguments, the data, the clock, the final accuracy and the JSON line.

Kept free of heavy imports at module level so each contender can time its own
framework import first. The data is MNIST from ``trainwell.datasets.load_mnist()``,
cached once by ``bench/run.py`` as uint8 arrays in ``bench/.cache/mnist.npz`` so that no
contender pays (or is charged RSS for) trainwell's zarr reader: training set = the
first 54,000 training images, validation = the official 10k test set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
# The contender scripts are named after their frameworks (lightning.py, ignite.py, keras.py): drop
# their folder from the import path, now that this module is loaded, so `import ignite` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "mnist.npz"
N_TRAIN = 54_000
MEAN, STD = 0.1307, 0.3081  # == trainwell.recipes.mnist.MEAN / STD
LR = 1e-3


def parse_args(variants: tuple[str, ...] = ("default",)) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--variant", default=variants[0], choices=variants)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def ensure_cache() -> Path:
    """Write bench/.cache/mnist.npz from trainwell's loader (once)."""
    if not CACHE.exists():
        import numpy as np

        from trainwell.datasets import load_mnist

        a = load_mnist()
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(".tmp.npz")
        np.savez(tmp, train_images=a.train_images, train_labels=a.train_labels,
                 test_images=a.test_images, test_labels=a.test_labels)
        os.replace(tmp, CACHE)
    return CACHE


def normalize(images):
    """Same formula as ``trainwell.recipes.mnist.normalize``: uint8 [N,28,28] -> float32 [N,784]."""
    return ((images.reshape(len(images), -1).float() / 255.0) - MEAN) / STD


def load_numpy():
    """(x_train uint8 [54000,28,28], y_train int64, x_val uint8 [10000,28,28], y_val int64) as numpy."""
    import numpy as np

    with np.load(ensure_cache()) as d:
        return (d["train_images"][:N_TRAIN], d["train_labels"][:N_TRAIN].astype(np.int64),
                d["test_images"], d["test_labels"].astype(np.int64))


def load_tensors(device: str = "cpu"):
    """Normalised float32 tensors (x_train [54000,784], y_train, x_val [10000,784], y_val) on ``device``."""
    import torch

    xt, yt, xv, yv = load_numpy()
    out = (normalize(torch.from_numpy(xt)), torch.from_numpy(yt), normalize(torch.from_numpy(xv)), torch.from_numpy(yv))
    return tuple(t.to(device) for t in out)


def mlp():
    """Seed 000's 784-256-128-10 MLP (235,146 parameters); identical to ``trainwell.recipes.mnist.mlp()``."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def direct_fused_adam_step(optimizer, lr: float):
    """The hand-tuned loop's ``optimizer.step()`` then ``zero_grad(set_to_none=True)`` for a fused
    ``Adam(lr=lr)`` in default settings: the first call goes through ``step()``, which makes the
    state; later calls call torch's fused Adam kernel directly on that state."""
    import torch

    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = None  # (exp_avgs, exp_avg_sqs, steps), once the first step has made them

    def step() -> None:
        nonlocal state
        if state is None:
            optimizer.step()
            kept = [optimizer.state[p] for p in params]
            state = ([s["exp_avg"] for s in kept], [s["exp_avg_sq"] for s in kept], [s["step"] for s in kept])
        else:
            exp_avgs, exp_avg_sqs, steps = state
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                               lr=lr, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False,
                               grad_scale=None, found_inf=None)
        for p in params:
            p.grad = None

    return step


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def accuracy(forward, x, y, batch_size: int = 1000) -> float:
    """Top-1 accuracy (%) of ``forward`` on (x, y), in eval mode without gradients."""
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int((forward(x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / len(x)


class EpochClock:
    """Wall time of the timed epochs, epoch by epoch: ``epoch_start(i)`` as epoch ``i`` (0-based)
    begins marks the time from epoch 1 on (epoch 0 is the warm-up), ``stop()`` after the last."""

    def __init__(self, device: str):
        self.device, self.marks, self.stopped = device, [], False

    def epoch_start(self, index: int) -> None:
        if index >= 1:
            self._mark()

    def stop(self) -> None:
        self._mark()
        self.stopped = True

    def _mark(self) -> None:
        sync(self.device)
        self.marks.append(time.perf_counter())

    @property
    def epoch_seconds(self) -> list[float]:
        """Each timed epoch's wall time (the last one up to ``stop()``, its end-of-run work included)."""
        if not self.stopped or len(self.marks) < 2:
            raise RuntimeError("the epoch clock was not started and stopped")
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    @property
    def seconds(self) -> float:
        return sum(self.epoch_seconds)


class TrainerClock:
    """A trainwell callback: marks each epoch's start (timing from epoch 2, after the warm-up) and
    stops in ``on_fit_end``. That is after the last epoch's checkpoint has been captured and handed to
    the writer thread, and before the run directory's own ``on_fit_end`` (the final weights; it is the
    last callback) and the trainer's wait for the checkpoint's fsync: the point where the other
    trainers' clocks stop too (their ``on_train_end``)."""

    def __init__(self, device: str):
        self.clock = EpochClock(device)

    def on_epoch_start(self, trainer, epoch):
        self.clock.epoch_start(epoch)

    def on_fit_end(self, trainer, history):
        self.clock.stop()


def report(name: str, args: argparse.Namespace, *, import_s: float, clock: EpochClock, samples: int,
           val_acc: float, **extra) -> None:
    """Print the one JSON line run.py reads (``samples``: over all timed epochs)."""
    import torch

    timed_s = clock.seconds
    result = {
        "contender": name, "variant": args.variant, "batch_size": args.batch_size, "epochs": args.epochs,
        "device": args.device, "samples_per_s": samples / timed_s, "timed_s": timed_s,
        "epoch_s": clock.epoch_seconds,
        "val_acc": val_acc, "import_s": import_s, "wall_s": time.perf_counter() - STARTED,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, **extra,
    }
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def skipped(name: str, reason: str) -> None:
    print(json.dumps({"contender": name, "skipped": reason}), flush=True)
    sys.exit(0)


def timed_import(name: str, *modules: str) -> tuple[float, dict[str, str]]:
    """Import ``modules`` in order and time it; print a skip line and exit if one is missing."""
    import importlib

    t = time.perf_counter()
    versions = {}
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError as e:
            skipped(name, f"{m} is not installed ({e}); pip install -e '.[bench]'")
        versions[m] = getattr(mod, "__version__", "")
    return time.perf_counter() - t, versions
