"""Where and how the math runs: device choice, precision, seeding and RNG state."""

from __future__ import annotations

import contextlib
import random
import resource
import signal
import threading
from typing import Any, Callable, ContextManager, Iterator

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
    version, keys, gauss = random.getstate()
    state: dict[str, Any] = {
        # 625 words as one tensor: pickled one by one they were a third of a checkpoint's save time
        "python": (version, torch.tensor(keys, dtype=torch.int64), gauss),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),  # uint32 words
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys.tolist()), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(value: Any, device: torch.device) -> Any:
    """A tensor (or a dict of them) on ``device``; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def place_on_device(loader: Any, device: torch.device) -> None:
    """Move an in-memory loader's tensors to ``device`` when they take under half its free memory."""
    if loader.device == device:
        return
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if loader.nbytes > free // 2:
            return
    loader.to(device)


def peak_memory(device: torch.device) -> int:
    """Peak bytes so far: the GPU allocator's on CUDA, the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def stop_on_signals(request: Callable[[str], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``request(signal_name)`` (finish the step, then stop); a second one aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        request(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
