"""Checks that turn cryptic failures into clear errors before compute is wasted.

They run once, on the first batch the trainer sees (and on the whole dataset when it
is in memory, where that is cheap): NaN/inf inputs, labels outside the model's
outputs, and a model/data shape mismatch.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from trainwell.errors import DataError

_SHAPE_ERRORS = ("shape", "size mismatch", "mat1 and mat2", "must match the size", "expected input")


def check_finite(tensors: Any, where: str) -> None:
    """DataError when any floating tensor in ``tensors`` holds NaN or inf."""
    for name, tensor in _floating(tensors):
        if bool(torch.isfinite(tensor.sum())):  # any NaN/inf makes the sum non-finite: a cheap first look
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = (~finite).nonzero()[0].tolist()
            raise DataError(
                f"{where} {name} contain NaN or inf (first at index {tuple(bad)}); "
                "clean or impute the data before training"
            )


def _floating(tensors: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(tensors, torch.Tensor):
        return [("inputs", tensors)] if tensors.is_floating_point() else []
    if isinstance(tensors, dict):
        return [(f"'{k}'", v) for k, v in tensors.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return []


def check_labels(targets: torch.Tensor, num_classes: int, where: str) -> None:
    """DataError when an integer label falls outside ``0 .. num_classes - 1``."""
    if targets.numel() == 0:
        return
    low, high = int(targets.min()), int(targets.max())
    bad = high if high >= num_classes else low if low < 0 else None
    if bad is not None:
        raise DataError(
            f"{where} has label {bad}, but the model has {num_classes} outputs (valid labels 0..{num_classes - 1}); "
            "give the model more outputs or fix the labels"
        )


def forward_with_shape_check(forward: Callable[[], Any], inputs: Any) -> Any:
    """Run the first forward pass, explaining a shape mismatch between model and data."""
    try:
        return forward()
    except RuntimeError as e:
        message = str(e)
        if not any(hint in message for hint in _SHAPE_ERRORS):
            raise
        raise DataError(
            f"model and data do not fit: the first batch has input shape {_shape_of(inputs)}, "
            f"and the model fails on it ({message.splitlines()[0]})"
        ) from e


def _shape_of(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor):
        return tuple(inputs.shape)
    if isinstance(inputs, dict):
        return {k: tuple(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return type(inputs).__name__
