"""Optimizer helpers: seed 003's clip_grad_norm and the fast optimizer constructors recipes use."""

from __future__ import annotations

from typing import Iterable

import torch

from trainwell.errors import ConfigError

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float = 1.0) -> float:
    """Global L2 norm of all gradients before clipping; scales them in place iff it exceeds ``max_norm``.

    Accepts any iterable (a generator too); parameters without a gradient are skipped.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if float(norm) > max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, device: torch.device,
                   **options: float) -> torch.optim.Optimizer:
    """``adam`` / ``adamw`` / ``sgd`` with torch's fused kernel where the device supports it.

    Fused Adam/AdamW/SGD update every parameter in one kernel: on a small model at
    batch 64 that roughly halves the step time on CPU.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, got {lr}")
    fused = device.type in ("cpu", "cuda", "mps")
    return OPTIMIZERS[name](params, lr=lr, fused=fused, **options)
