"""Seed 004's XOR example: the four points repeated 250 times with Gaussian noise 0.1,
split 80/10/10, a 2-4-1 network, early stopping on the validation loss.
"""

from __future__ import annotations

import torch
from torch import nn

from trainwell.config import TrainConfig
from trainwell.data import train_val_test_split
from trainwell.datasets import make_xor
from trainwell.recipes import Parts, Recipe
from trainwell.recipes.common import assemble


def build(config: TrainConfig, device: torch.device) -> Parts:
    x, y = make_xor(repeats=250, noise=0.1, seed=config.seed)
    splits = train_val_test_split(x, y, train=0.8, val=0.1, seed=config.seed)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    return assemble(config, device, model, nn.BCEWithLogitsLoss(), splits)


RECIPE = Recipe("xor", build)
