"""Recipes: named presets (model + data + defaults) as Python functions, not YAML strings.

The registry lists module paths only, so ``trainwell --help`` names the recipes
without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from trainwell.config import closest
from trainwell.errors import ConfigError

RECIPES = {
    "mnist": ("trainwell.recipes.mnist", "seed 000: 235,146-parameter MLP on full MNIST (ships with the install)"),
    "xor": ("trainwell.recipes.xor", "seed 004: 2-4-1 network on noisy XOR, 80/10/10 split, early stopping"),
}


@dataclass
class Parts:
    """What a recipe builds for the trainer."""

    model: Any
    optimizer: Any
    loss_fn: Any
    train: Any
    val: Any = None
    test: Any = None
    scheduler: Any = None
    callbacks: list = field(default_factory=list)
    example_batch: Any = None  # one micro-batch of inputs, for the memory estimate


@dataclass
class Recipe:
    name: str
    defaults: dict[str, Any]
    build: Callable[..., Parts]


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a ConfigError listing the valid ones otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}{closest(name, RECIPES)}; available: {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[name][0]).RECIPE
