"""Nested training state (dicts, lists and tuples of tensors and plain values): walk it,
copy it, take its tensors out and put them back. Checkpoints, the health guard's snapshots
and gradient flow all work on such trees."""

from __future__ import annotations

from typing import Any, Callable

import torch

_PLAIN = {int, float, str, bool, bytes, type(None)}


def walk(state: Any, fn: Callable[[tuple, torch.Tensor], Any], path: tuple = ()) -> Any:
    """``state`` rebuilt with ``fn(path, tensor)`` in place of each tensor (depth first, in order);
    a path is the keys and indices that lead to the tensor."""
    if isinstance(state, torch.Tensor):
        return fn(path, state)
    if isinstance(state, dict):
        return {k: walk(v, fn, path + (k,)) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        if set(map(type, state)) <= _PLAIN:  # e.g. a list of floats: no walk needed
            return list(state) if isinstance(state, list) else state
        return type(state)(walk(v, fn, path + (i,)) for i, v in enumerate(state))
    return state


def map_tensors(state: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``state`` rebuilt with ``fn(tensor)`` in place of each tensor (depth first, in order)."""
    return walk(state, lambda _, tensor: fn(tensor))


def tensors(state: Any) -> list[torch.Tensor]:
    """The tensors in a nested state, in the order ``map_tensors`` visits them."""
    found: list[torch.Tensor] = []
    map_tensors(state, found.append)
    return found


def copy_state(state: Any, reuse: Any = None) -> Any:
    """A private copy of a nested state (dicts, lists, tensors, plain values), taken now.

    Tensors are copied into ``reuse``'s tensors (a previous copy of the same structure)
    where shape, dtype and device match, so repeated copies allocate nothing; others are cloned.
    """
    spare = iter(tensors(reuse))
    targets: list[torch.Tensor] = []
    sources: list[torch.Tensor] = []

    def copy(value: torch.Tensor) -> torch.Tensor:
        value = value.detach()
        buffer = next(spare, None)
        if buffer is not None and (buffer.shape, buffer.dtype, buffer.device) == (value.shape, value.dtype, value.device):
            targets.append(buffer)
            sources.append(value)
            return buffer
        return value.clone()

    copied = map_tensors(state, copy)
    if targets:
        torch._foreach_copy_(targets, sources)
    return copied


def join(state: Any, placed: dict[tuple, torch.Tensor], path: tuple = ()) -> Any:
    """Put each tensor of ``placed`` back at its path in ``state`` (the inverse of taking them
    out with ``walk``; every list is entered, since the places left are plain values)."""
    if path in placed:
        return placed[path]
    if isinstance(state, dict):
        return {k: join(v, placed, path + (k,)) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(join(v, placed, path + (i,)) for i, v in enumerate(state))
    return state
