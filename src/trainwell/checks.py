"""Checks that turn cryptic failures and silent mistakes into clear errors before compute is wasted.

They run once, on the first batch the trainer sees (and on the whole dataset when it
is in memory, where that is cheap): NaN/inf inputs or targets, labels outside the
model's outputs, a model/data shape mismatch, and a loss that would silently broadcast
the model's outputs against targets of another shape.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from trainwell.data import InMemoryLoader, num_batches
from trainwell.errors import ConfigError, DataError
from trainwell.metrics import classification_kind
from trainwell.oom import is_out_of_memory

_SHAPE_ERRORS = ("shape", "size mismatch", "mat1 and mat2", "must match the size", "expected input")
# Losses that compare output and target element by element: different shapes broadcast silently.
_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)
_ELEMENTWISE_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss)
_CROSS_ENTROPY = (nn.CrossEntropyLoss, nn.NLLLoss)
_CROSS_ENTROPY_FUNCTIONS = (F.cross_entropy, F.nll_loss)


def check_options(grad_clip_norm: float | None, grad_norm_every: Any, checkpoint_every_steps: int | None,
                  run_dir: Any) -> None:
    """ConfigError for a Trainer option that cannot work, before anything is built."""
    if grad_clip_norm is not None and not grad_clip_norm > 0:
        raise ConfigError(f"grad_clip_norm must be > 0, got {grad_clip_norm}")
    if not isinstance(grad_norm_every, int) or grad_norm_every < 1:
        raise ConfigError(f"grad_norm_every must be a whole number of at least 1, got {grad_norm_every!r}")
    if checkpoint_every_steps is not None and (checkpoint_every_steps < 1 or run_dir is None):
        raise ConfigError("checkpoint_every_steps needs run_dir and a value of at least 1")


def check_finite(tensors: Any, where: str, what: str = "inputs", rows: Any = None) -> None:
    """DataError when any floating tensor in ``tensors`` holds NaN or inf.

    ``rows`` maps a first index to the data set's row (a Subset's indices), so the message
    names the row the user can look up.
    """
    for name, tensor in _floating(tensors, what):
        if bool(torch.isfinite(tensor.sum())):  # any NaN/inf makes the sum non-finite: a cheap first look
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = (~finite).nonzero()[0].tolist()
            place = f"at index {tuple(bad)}"
            if rows is not None:
                place = f"in row {int(rows[bad[0]])} of the data set" + (f", position {tuple(bad[1:])}" if bad[1:] else "")
            raise DataError(f"{where} {name} contain NaN or inf (first {place}); clean or impute the data before training")


def _floating(tensors: Any, what: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(tensors, torch.Tensor):
        return [(what, tensors)] if tensors.is_floating_point() else []
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


def check_dataset(dataloader: Iterable, name: str) -> torch.Tensor | None:
    """Whole-set checks where the data is in memory (cheap); returns integer labels to check against the model.

    An ``InMemoryLoader``'s tensors, and a ``DataLoader`` over a ``TensorDataset`` (or a Subset
    of one), are checked for NaN/inf in inputs and targets, naming the data set's row.
    """
    if num_batches(dataloader) == 0:
        raise DataError(f"the {name} data is empty: it has no batches")
    tensors, rows = _in_memory_tensors(dataloader)
    if tensors is None:
        return None
    for index, tensor in enumerate(tensors[:2]):
        picked = tensor[torch.as_tensor(rows, device=tensor.device)] if rows is not None else tensor
        check_finite(picked, f"the {name}", "inputs" if index == 0 else "targets", rows or range(len(tensor)))
    labels = tensors[1] if len(tensors) > 1 else None
    if labels is None or labels.is_floating_point():
        return None
    return labels[torch.as_tensor(rows, device=labels.device)] if rows is not None else labels


def _in_memory_tensors(dataloader: Iterable) -> tuple[tuple[torch.Tensor, ...] | None, list[int] | None]:
    """The tensors behind a loader and the rows it uses (None: all of them), where they are at hand."""
    if isinstance(dataloader, InMemoryLoader):
        return dataloader.tensors, None
    dataset = dataloader.dataset if isinstance(dataloader, DataLoader) else None
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        return dataset.dataset.tensors, list(dataset.indices)
    if isinstance(dataset, TensorDataset):
        return dataset.tensors, None
    return None, None


def check_window(batches: list, epoch: int, first_batch: int) -> None:
    """After a non-finite loss: DataError if the data itself holds NaN or inf (a skipped step cannot fix that)."""
    for offset, (inputs, targets, _) in enumerate(batches):
        where = f"batch {first_batch + offset + 1} of epoch {epoch + 1}:"
        check_finite(inputs, where, "inputs")
        check_finite(targets, where, "targets")


def first_batch(forward: Callable[[], Any], compute_loss: Callable[[Any], tuple], inputs: Any, targets: Any,
                loss_fn: Any, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """The first forward and loss of a set, with its problems explained: (logits, loss, kind)."""
    check_finite(inputs, "the first batch's", "inputs")
    check_finite(targets, "the first batch's", "targets")
    try:
        outputs = forward()
    except RuntimeError as e:
        if is_out_of_memory(e) or not any(hint in str(e) for hint in _SHAPE_ERRORS):
            raise
        raise DataError(f"model and data do not fit: the model fails on the first batch's inputs of shape "
                        f"{_shape_of(inputs)} ({str(e).splitlines()[0]})") from e
    logits = getattr(outputs, "logits", outputs)
    kind = classification_kind(logits, targets, loss_fn)
    if kind == "multiclass":
        check_labels(targets, logits.shape[-1], "the first batch")
        if labels is not None:
            check_labels(labels, logits.shape[-1], "the data set")
    check_loss_shapes(logits, targets, loss_fn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            logits, loss = compute_loss(outputs)
        except (RuntimeError, ValueError) as e:
            if is_out_of_memory(e):
                raise
            raise _loss_error(e, logits, targets, loss_fn) from e
    for warning in caught:
        if "different to the input size" in str(warning.message):
            raise _broadcast_error(logits, targets, type(loss_fn).__name__)
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return logits, loss, kind


def check_loss_shapes(logits: Any, targets: Any, loss_fn: Any) -> None:
    """DataError when an elementwise loss would broadcast outputs and targets of different shapes."""
    elementwise = isinstance(loss_fn, _ELEMENTWISE) or loss_fn in _ELEMENTWISE_FUNCTIONS
    if (elementwise and isinstance(logits, torch.Tensor) and isinstance(targets, torch.Tensor)
            and logits.shape != targets.shape):
        raise _broadcast_error(logits, targets, getattr(loss_fn, "__name__", type(loss_fn).__name__))


def _broadcast_error(logits: torch.Tensor, targets: torch.Tensor, loss_name: str) -> DataError:
    fix = "make the model's last layer give one output per target value"
    if logits.numel() == targets.numel():
        fix = f"reshape one to match the other (e.g. targets.view({', '.join(map(str, logits.shape))}))"
    return DataError(
        f"the loss ({loss_name}) compares the model's outputs of shape {tuple(logits.shape)} with targets of "
        f"shape {tuple(targets.shape)}: torch would broadcast them and train a wrong model without an error; {fix}"
    )


def _loss_error(error: Exception, logits: Any, targets: Any, loss_fn: Any) -> Exception:
    """A DataError naming the outputs and the targets when the loss fails on the first batch."""
    message = str(error).splitlines()[0]
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return error
    shapes = (f"the model's outputs have shape {tuple(logits.shape)}, the targets shape {tuple(targets.shape)} "
              f"and dtype {str(targets.dtype).replace('torch.', '')}")
    if isinstance(loss_fn, _CROSS_ENTROPY) or loss_fn in _CROSS_ENTROPY_FUNCTIONS:
        if targets.is_floating_point() and targets.shape != logits.shape:
            hint = "cross-entropy needs integer class labels: convert the targets with .long()"
        else:
            hint = f"cross-entropy needs one integer class label per sample, shape {tuple(logits.shape[:-1])}"
        if targets.ndim == logits.ndim and targets.shape[-1] == 1:
            hint += " (squeeze the last dimension: targets.squeeze(-1))"
        return DataError(f"the loss fails on the first batch: {hint}; {shapes} ({message})")
    if any(hint in message for hint in _SHAPE_ERRORS + ("Target size",)):
        return DataError(f"the loss fails on the first batch: {shapes} ({message})")
    return error


def _shape_of(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor):
        return tuple(inputs.shape)
    if isinstance(inputs, dict):
        return {k: tuple(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return type(inputs).__name__


def model_loss(outputs: Any, targets: Any, loss_fn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, mean loss) of a model's outputs: ``loss_fn``'s, or the output's ``.loss`` (Hugging Face
    style) when there is none; a label beyond the model's outputs is named as the data error it is."""
    logits = outputs if isinstance(outputs, torch.Tensor) else getattr(outputs, "logits", outputs)
    if loss_fn is None:
        loss = getattr(outputs, "loss", None)
        if loss is None:
            raise ConfigError("no loss_fn was given and the model's output has no .loss")
        return logits, loss
    try:
        return logits, loss_fn(logits, targets)
    except (IndexError, RuntimeError) as e:
        if "out of bounds" in str(e):
            raise DataError(f"a label is outside the model's {logits.shape[-1]} outputs ({e})") from e
        raise
