"""trainwell: a PyTorch training loop you can trust.

    import trainwell as tw
    trainer = tw.Trainer(model, optimizer, loss_fn, scheduler, grad_clip_norm=1.0)
    history = trainer.fit(train_loader, val_loader, epochs=10)

Names load on first use (PEP 562), so the command line starts without importing torch.
"""

import importlib as _importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Trainer": "trainwell.trainer",
    "CosineSchedule": "trainwell.schedules",
    "clip_grad_norm": "trainwell.optim",
    "EarlyStopping": "trainwell.callbacks",
    "HealthGuard": "trainwell.health",
    "InMemoryLoader": "trainwell.data",
    "Curriculum": "trainwell.curriculum",
    "train_val_test_split": "trainwell.data",
    "plot_learning_curves": "trainwell.plotting",
    "Callback": "trainwell.events",
    "Event": "trainwell.events",
    "SkipStep": "trainwell.events",
    "StopTraining": "trainwell.events",
    "seed_everything": "trainwell.runtime",
    "lr_find": "trainwell.lr_finder",
    "TrainwellError": "trainwell.errors",
    "ConfigError": "trainwell.errors",
    "DataError": "trainwell.errors",
    "CheckpointError": "trainwell.errors",
    "TrainingError": "trainwell.errors",
}

__all__ = sorted(_EXPORTS)
_METADATA = ["__all__", "__doc__", "__file__", "__name__", "__package__", "__path__", "__spec__", "__version__"]


_SUBMODULES = ("memory",)  # tw.memory.estimate(...) without importing trainwell.memory first


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return _importlib.import_module(f"trainwell.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainwell' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The API and the module's metadata; not its helpers or the submodules it has loaded."""
    return sorted(__all__ + [name for name in _METADATA if name in globals()])
