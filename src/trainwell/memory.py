"""Seed 003's memory analysis, done for the real model before training starts.

Parameters + gradients + optimizer state (Adam keeps two moments, SGD with momentum
one) + the activations one micro-batch keeps for the backward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

STATE_COPIES = {torch.optim.Adam: 2, torch.optim.AdamW: 2, torch.optim.SGD: 1}


def estimate(model: nn.Module, optimizer: torch.optim.Optimizer, example_inputs: Any = None) -> dict[str, int | None]:
    """Bytes for each part of training memory; activations need ``example_inputs`` (one micro-batch)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    copies = STATE_COPIES.get(type(optimizer), 2)
    if isinstance(optimizer, torch.optim.SGD) and not optimizer.defaults.get("momentum"):
        copies = 0
    result: dict[str, int | None] = {"parameters": params, "gradients": grads, "optimizer_state": copies * grads,
                                     "activations": 0}
    if example_inputs is not None:
        result["activations"] = _activation_bytes(model, example_inputs)
    result["total"] = sum(v or 0 for v in result.values())
    return result


def _activation_bytes(model: nn.Module, inputs: Any) -> int | None:
    """Sum of every leaf module's output size for one forward pass (what autograd keeps, roughly).

    None when the model fails on ``inputs``: the estimate is never the first thing to fail,
    the trainer's first-batch checks explain what is wrong with the data.
    """
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(**inputs) if isinstance(inputs, dict) else model(inputs)
    except Exception:  # noqa: BLE001 - any failure here is reported, better, by the first-batch checks
        return None
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def describe(sizes: dict[str, int | None], num_params: int) -> str:
    """One readable line, e.g. ``Memory estimate: 0.9 MB params (235,146) + ... = 4.2 MB``."""
    parts = " + ".join(f"{_mb(sizes[k]) if sizes[k] is not None else '? MB'} {k.replace('_', ' ')}" for k in
                       ("parameters", "gradients", "optimizer_state", "activations"))
    ratio = sizes["total"] / max(sizes["parameters"], 1)
    return f"Memory estimate: {parts} = {_mb(sizes['total'])} ({ratio:.1f}x the model; {num_params:,} parameters)"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
