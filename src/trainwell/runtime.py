"""Where and how the math runs: device choice, precision, seeding and RNG state."""

from __future__ import annotations

import contextlib
import random
from typing import Any, ContextManager

import numpy as np
import torch

from trainwell.errors import ConfigError

PRECISIONS = ("32", "bf16", "16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; asking for an absent GPU is a ConfigError."""
    if isinstance(device, torch.device):
        device = str(device)
    kind = device.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but Apple's MPS is not available; use --device cpu or auto")
    return torch.device(device)


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``precision`` for ``device``; returns it as a string."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "16" and device.type != "cuda":
        raise ConfigError("precision '16' (float16 with loss scaling) needs a CUDA GPU; use 'bf16' on CPU")
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast context for one forward pass (a no-op at full precision)."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG's state, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, keys, internal = state["python"]
    random.setstate((version, tuple(keys), internal))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
