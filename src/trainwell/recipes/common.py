"""What every recipe shares: optimizer, schedule and callbacks from the config."""

from __future__ import annotations

from typing import Any

import torch

from trainwell.callbacks import EarlyStopping
from trainwell.config import FIELDS, TrainConfig
from trainwell.curriculum import for_recipe
from trainwell.data import InMemoryLoader
from trainwell.errors import ConfigError
from trainwell.optim import make_optimizer
from trainwell.recipes import Parts

# Early stopping counts an epoch as progress only if the validation loss improves by more than this
# (in nats, the unit of the recipes' cross-entropy losses): xor's loss creeping down by 1e-7 an epoch
# near zero is not progress, and with min_delta 0 its patience of 20 never ran out in 200 epochs.
EARLY_STOPPING_MIN_DELTA = 1e-4
TEXT_ONLY = ("model", "max_length", "group_by_length")  # options only the text-classify recipe reads


def refuse_text_options(config: TrainConfig) -> None:
    """An option this recipe does not read is a mistake to say, not to ignore."""
    for name in TEXT_ONLY:
        if getattr(config, name) != FIELDS[name].default:
            raise ConfigError(f"--{name.replace('_', '-')} applies to the text-classify recipe only, "
                              f"not to {config.recipe}")


def assemble(config: TrainConfig, device: torch.device, model: torch.nn.Module, loss_fn: Any,
             splits: tuple, **extra: Any) -> Parts:
    """Parts from a model, a loss and ``((x, y) train, val, test)`` tensors, per the config."""
    refuse_text_options(config)
    (x_train, y_train), val, test = splits
    if config.num_samples is not None:
        x_train, y_train = x_train[: config.num_samples], y_train[: config.num_samples]
    model = model.to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, device,
                               weight_decay=config.weight_decay)
    schedule: Any = None
    if config.schedule != "constant" or config.warmup:
        name = "warmup-cosine" if config.schedule == "constant" else config.schedule
        schedule = (name, {"warmup_steps": config.warmup}) if config.warmup else name
    callbacks = [EarlyStopping(patience=config.patience, min_delta=EARLY_STOPPING_MIN_DELTA)] if config.patience else []

    def loader(x: torch.Tensor, y: torch.Tensor, shuffle: bool) -> InMemoryLoader | None:
        return InMemoryLoader(x, y, batch_size=config.batch_size, shuffle=shuffle, seed=config.seed) if len(x) else None

    train = loader(x_train, y_train, True)
    if train is not None:
        train = for_recipe(config, train, model, loss_fn, optimizer)
    return Parts(
        model=model, optimizer=optimizer, loss_fn=loss_fn, scheduler=schedule, callbacks=callbacks,
        train=train, val=loader(*val, False), test=loader(*test, False),
        example_batch=x_train[: config.batch_size], **extra,
    )
