"""Seed 001's regression loss on real data: scikit-learn's bundled diabetes data (442 patients,
10 baseline measurements; the target is a measure of disease progression one year later),
split 70/15/15, a 10-64-64-1 MLP, MSE, early stopping on the validation loss.

Features and targets are standardised with the training split's statistics only (the
validation and test patients are never looked at to scale anything; the package's own
``scaled=True`` copy is centred on all 442, so the raw one is read). The loss is therefore
the MSE in units of the training targets' variance (predicting the training mean scores
about 1.0); MAE is reported in the target's own units (progression points) and R² is the
same in either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainwell.config import TrainConfig
from trainwell.data import train_val_test_split
from trainwell.recipes import Parts, Recipe
from trainwell.recipes.common import assemble
from trainwell.setmetrics import SetMetrics

SPLIT = {"train": 0.7, "val": 0.15}  # 309 / 66 / 67 patients: enough held out for R² to mean something
HIDDEN = 64


def load_diabetes_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """(features [442, 10], progression [442]) as float32, unscaled, from the file inside scikit-learn."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    return torch.tensor(data.data, dtype=torch.float32), torch.tensor(data.target, dtype=torch.float32)


def standardised_splits(x: torch.Tensor, y: torch.Tensor, seed: int, targets: bool = True) -> tuple[tuple, float]:
    """((x, y) train, validation, test) standardised by the training split's mean and standard
    deviation (the targets too, unless ``targets=False``), and the training targets' standard
    deviation (to report errors in the original units)."""
    splits = train_val_test_split(x, y, seed=seed, **SPLIT)
    (x_train, y_train) = splits[0]
    x_mean, x_std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = (y_train.mean(), y_train.std()) if targets else (0.0, 1.0)
    scaled = tuple(((xs - x_mean) / x_std, (ys - y_mean) / y_std) for xs, ys in splits)
    return scaled, float(y_train.std())


def regression_metrics(target_std: float):
    """MAE (in the target's units) and R² of predictions on standardised targets, by torchmetrics."""
    from torchmetrics.functional import mean_absolute_error, r2_score

    def compute(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        predicted = outputs.reshape(targets.shape)
        return {"mae": float(mean_absolute_error(predicted, targets)) * target_std,
                "r2": float(r2_score(predicted, targets))}

    return compute


def mlp(features: int = 10) -> nn.Module:
    """features -> 64 -> 64 -> 1 with ReLU."""
    return nn.Sequential(nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, 1), nn.Flatten(0))


def build(config: TrainConfig, device: torch.device) -> Parts:
    (train, val, test), target_std = standardised_splits(*load_diabetes_tensors(), seed=config.seed)
    parts = assemble(config, device, mlp(), F.mse_loss, (train, val, test))
    parts.callbacks.append(SetMetrics(regression_metrics(target_std), val=val, test=test))
    return parts


RECIPE = Recipe("regression", build)
