"""Curriculum learning (seed 001's bonus): train on the easy samples first, then widen the pool.

``Curriculum`` is an ``InMemoryLoader`` whose epoch ``e`` draws its samples from the easiest
``c(e)`` share of the data, by a per-sample difficulty score, with Platanios et al.'s (2019)
square-root competence

    c(e) = min(1, sqrt(e * (1 - c0**2) / T + c0**2))      (c(0) = c0, c(T) = 1)

Pacing is per epoch, and every epoch has the same ``len()`` as the plain loader (N samples):
a pool smaller than N is gone through in several seeded permutations, so early epochs revisit
the easy samples. The step count per epoch never changes, so schedules, progress and the
trainer's position work unchanged, and an epoch's order stays a pure function of
(seed, epoch, difficulty): mid-epoch resume is exact. From epoch T on, the order is exactly
the plain ``InMemoryLoader``'s.

The difficulty is a tensor of N scores (lower = easier), or a function of the loader's
tensors computed once, when the first batch is drawn: ``per_sample_loss`` of a given model
(``Curriculum.from_model``), or of a reference copy trained for one epoch (``self_taught``,
what ``--curriculum loss`` uses).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from typing import Any, Callable, Iterator

import torch
from torch import nn

from trainwell.data import InMemoryLoader, epoch_seed
from trainwell.errors import ConfigError, DataError
from trainwell.runtime import rng_state, seed_everything, set_rng_state


class Curriculum(InMemoryLoader):
    """Batches of ``tensors`` from easy to hard: epoch ``e`` draws N samples from the easiest
    ``competence(e)`` share (by ``difficulty``, lower = easier; ties by index), shuffled with the
    loader's seeded generator. ``initial`` is c0, the first epoch's share; ``full_at`` is T, the
    epoch from which every sample is in the pool. The rest (length, device placement,
    ``state_dict``, distributed sharding) is ``InMemoryLoader``'s.
    """

    def __init__(self, *tensors: torch.Tensor, difficulty: Any, batch_size: int = 32, drop_last: bool = False,
                 seed: int | None = None, initial: float = 0.2, full_at: int = 3):
        super().__init__(*tensors, batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=seed)
        if isinstance(initial, bool) or not isinstance(initial, (int, float)) or not 0 < initial <= 1:
            raise ConfigError(f"initial (the first epoch's share of the data) must be in (0, 1], got {initial!r}")
        if isinstance(full_at, bool) or not isinstance(full_at, int) or full_at < 1:
            raise ConfigError(f"full_at (the epoch from which every sample is used) must be a whole number of at "
                              f"least 1, got {full_at!r}")
        self.initial, self.full_at = float(initial), full_at
        self._score: Callable[..., torch.Tensor] | None = difficulty if callable(difficulty) else None
        self._ranked = None if callable(difficulty) else _rank(difficulty, self.num_samples)

    @classmethod
    def from_model(cls, model: nn.Module, loss_fn: Any, *tensors: torch.Tensor, **options: Any) -> "Curriculum":
        """A curriculum whose difficulty is ``model``'s per-sample loss on ``(inputs, targets)`` (computed
        at the first batch, in eval mode): a model trained before, on this task or a related one."""
        return cls(*tensors, difficulty=lambda inputs, targets, *_: per_sample_loss(model, loss_fn, inputs, targets),
                   **options)

    def competence(self, epoch: int) -> float:
        """c(epoch): the share of the data, easiest first, that epoch ``epoch`` (0-based) draws from."""
        if epoch >= self.full_at:
            return 1.0
        c0 = self.initial
        return min(1.0, math.sqrt(epoch * (1 - c0 * c0) / self.full_at + c0 * c0))

    def pool_size(self, epoch: int) -> int:
        """The number of samples in epoch ``epoch``'s pool: ceil(c(epoch) * N)."""
        c = self.competence(epoch)
        return self.num_samples if c >= 1.0 else max(1, math.ceil(c * self.num_samples))

    @property
    def ranked(self) -> torch.Tensor:
        """Sample indices from the easiest to the hardest (scoring them first, if that is still to do)."""
        if self._ranked is None:
            scores = self._score(*self.tensors)
            self._ranked, self._score = _rank(scores, self.num_samples), None  # the reference model is freed
        return self._ranked

    def order(self, epoch: int, seed: int) -> torch.Tensor:
        """The N sample indices of epoch ``epoch`` in training order: a pure function of (seed, epoch, scores)."""
        n, pool = self.num_samples, self.pool_size(epoch)
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        if pool == n:  # the plain loader's order
            return torch.randperm(n, generator=generator)
        easiest = self.ranked[:pool]
        rounds = [easiest[torch.randperm(pool, generator=generator)] for _ in range(math.ceil(n / pool))]
        return torch.cat(rounds)[:n]

    def batches(self, epoch: int, seed: int | None = None, start: int = 0, reuse: int = 0,
                shard: Any = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """The batches of ``epoch`` from batch ``start`` on (this process's part of each with a ``shard``).
        ``reuse`` is accepted for the trainer's call and not used: every batch is a fresh tensor."""
        seed = self.seed if self.seed is not None else (seed or 0)
        order = self.order(epoch, seed).to(self.device)
        size = self.batch_size
        spans = ((lo, lo + size) for lo in range(start * size, len(self) * size, size)) if shard is None else (
            shard.span(index) for index in range(start, len(shard)))
        for lo, hi in spans:
            picked = order[lo:hi]
            yield tuple(torch.index_select(t, 0, picked) for t in self.tensors)


def _rank(scores: Any, n: int) -> torch.Tensor:
    """Indices sorted by ``scores`` (stable: ties keep index order), after checking them."""
    scores = torch.as_tensor(scores).detach()
    if scores.ndim != 1 or len(scores) != n:
        raise DataError(f"difficulty must hold one score per sample: shape ({n},), got {tuple(scores.shape)}")
    if scores.is_complex() or scores.dtype == torch.bool:
        raise DataError(f"difficulty must be real numbers, got {scores.dtype}")
    bad = ~torch.isfinite(scores.float())
    if bool(bad.any()):
        raise DataError(f"difficulty holds {int(bad.sum())} NaN or infinite score(s), the first at sample "
                        f"{int(bad.nonzero()[0])}")
    return torch.argsort(scores.cpu(), stable=True)


@torch.no_grad()
def per_sample_loss(model: nn.Module, loss_fn: Any, inputs: torch.Tensor, targets: torch.Tensor,
                    batch_size: int = 1024) -> torch.Tensor:
    """``loss_fn`` of ``model`` on each sample (eval mode, no gradients), as a CPU tensor of N losses.

    ``loss_fn`` is run unreduced: a torch loss module with ``reduction="none"``, a function that
    takes ``reduction=`` (``F.cross_entropy``) with it, anything else one sample at a time."""
    unreduced = _unreduced(loss_fn)
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    losses = []
    try:
        for lo in range(0, len(inputs), batch_size):
            x, y = inputs[lo : lo + batch_size].to(device), targets[lo : lo + batch_size].to(device)
            outputs = model(x)
            if unreduced is not None:
                loss = unreduced(outputs, y)
                losses.append(loss.reshape(len(x), -1).float().mean(dim=1).cpu())
            else:
                losses.append(torch.stack([loss_fn(outputs[i : i + 1], y[i : i + 1]).float() for i in range(len(x))]).cpu())
    finally:
        model.train(was_training)
    return torch.cat(losses) if losses else torch.zeros(0)


def _unreduced(loss_fn: Any) -> Callable[..., torch.Tensor] | None:
    if isinstance(loss_fn, nn.Module) and hasattr(loss_fn, "reduction"):
        unreduced = copy.copy(loss_fn)
        unreduced.reduction = "none"
        return unreduced
    try:
        takes_reduction = "reduction" in inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        takes_reduction = False
    return functools.partial(loss_fn, reduction="none") if takes_reduction else None


def train_reference(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Any, inputs: torch.Tensor,
                    targets: torch.Tensor, *, batch_size: int, seed: int, epochs: int = 1) -> nn.Module:
    """Train ``model`` for ``epochs`` in random order (a plain loop), a pure function of ``seed``: every
    global RNG is seeded from it for the loop (dropout) and put back afterwards, so the scores do not
    depend on when they are computed (a resumed run computes them later) and the run using them draws
    exactly what it would have drawn without them."""
    saved, device = rng_state(), next(model.parameters()).device
    loader = InMemoryLoader(inputs, targets, batch_size=batch_size, seed=seed)
    model.train()
    try:
        seed_everything(seed)
        for epoch in range(epochs):
            for x, y in loader.batches(epoch):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x.to(device)), y.to(device)).backward()
                optimizer.step()
    finally:
        set_rng_state(saved)
    return model


def self_taught(model: nn.Module, make_optimizer: Callable[[Any], torch.optim.Optimizer], loss_fn: Any, *,
                batch_size: int, seed: int) -> Callable[..., torch.Tensor]:
    """A difficulty function for ``Curriculum``: a copy of ``model`` (taken now, before training changes
    it) trained one epoch in random order, then its per-sample loss (Hacohen & Weinshall's self-taught
    scoring). Deterministic on the CPU, so a resumed run ranks the samples the same way."""
    reference = copy.deepcopy(model)

    def difficulty(inputs: torch.Tensor, targets: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        trained = train_reference(reference, make_optimizer(reference.parameters()), loss_fn, inputs, targets,
                                  batch_size=batch_size, seed=seed)
        return per_sample_loss(trained, loss_fn, inputs, targets)

    return difficulty


def for_recipe(config: Any, train: InMemoryLoader, model: nn.Module, loss_fn: Any,
               optimizer: torch.optim.Optimizer) -> InMemoryLoader:
    """The recipe's training loader with ``config.curriculum`` applied: ``none`` leaves it as it is, ``loss``
    ranks the samples by ``self_taught`` scores (the recipe's model, optimizer and batch size) on the
    default schedule (c0 = 0.2, every sample from epoch 3 on)."""
    if config.curriculum == "none":
        return train
    from trainwell.optim import make_optimizer

    lr, device = optimizer.param_groups[0]["lr"], next(model.parameters()).device
    make = functools.partial(make_optimizer, config.optimizer, lr=lr, device=device,
                             weight_decay=config.weight_decay)
    difficulty = self_taught(model, make, loss_fn, batch_size=config.batch_size, seed=config.seed)
    return Curriculum(*train.tensors, difficulty=difficulty, batch_size=train.batch_size, drop_last=train.drop_last,
                      seed=train.seed)


def refuse(config: Any, why: str) -> None:
    """A ConfigError (exit 2) for a recipe that cannot order its samples by difficulty."""
    if config.curriculum != "none":
        raise ConfigError(f"curriculum {config.curriculum!r} does not apply to the {config.recipe} recipe: {why}; "
                          "use --curriculum none, or a recipe that supports it (mnist, xor, regression)")
