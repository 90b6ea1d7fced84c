"""Batches for the loop: an in-memory loader, the 80/10/10 split, and one function that
turns any loader into an epoch of batches whose order is a pure function of (seed, epoch).

That last property is what makes resume exact: an interrupted epoch is rebuilt in the
same order and the batches already trained on are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain, islice
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, Subset

from trainwell.errors import ConfigError, DataError
from trainwell.runtime import to_device


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch, mixing the run's seed and the epoch number."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class InMemoryLoader:
    """Batches of tensors held in memory (on the training device when they fit).

    Shuffling uses its own generator seeded from (seed, epoch), so the order never
    depends on, or disturbs, the global random state. ``state_dict()`` holds the
    epoch and the number of batches already served: resuming mid-epoch is instant.
    With ``seed=None`` the trainer's seed decides the order (0 when used alone).
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
    ):
        if not tensors:
            raise DataError("InMemoryLoader needs at least one tensor")
        tensors = tuple(torch.as_tensor(t) for t in tensors)
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise DataError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.position = 0

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def to(self, device: torch.device | str) -> "InMemoryLoader":
        """Move the data to ``device`` (in place; returns self)."""
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def batches(self, epoch: int, seed: int | None = None, start: int = 0, reuse: int = 0,
                shard: Any = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """The batches of ``epoch`` from batch index ``start`` on (this process's part of each
        global batch with a distributed ``shard``).

        With ``reuse=k`` the shuffled inputs (the first tensor) are gathered into a ring of
        ``k`` buffers, as a hand-tuned loop does: a batch's inputs are overwritten ``k``
        batches later. The trainer asks for this (k = the micro-batches of one step), which
        saves an allocation per step and the heap growth that a fresh batch of a large
        size causes (~100 MiB for MNIST at batch 512).
        """
        seed = self.seed if self.seed is not None else (seed or 0)
        order = None
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(self.num_samples, generator=generator).to(self.device)
        size, (first, *rest) = self.batch_size, self.tensors
        ring = [torch.empty((size, *first.shape[1:]), dtype=first.dtype, device=first.device)
                for _ in range(reuse if order is not None else 0)]
        spans = ((lo, lo + size) for lo in range(start * size, len(self) * size, size)) if shard is None else (
            shard.span(index) for index in range(start, len(shard)))
        for index, (lo, hi) in enumerate(spans):
            if order is None:
                yield tuple(t[lo:hi] for t in self.tensors)
                continue
            picked = order[lo:hi]
            if ring and picked.shape[0] == size:
                inputs = torch.index_select(first, 0, picked, out=ring[index % len(ring)])
            else:
                inputs = torch.index_select(first, 0, picked)
            yield (inputs, *[torch.index_select(t, 0, picked) for t in rest])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.batches(self.epoch, start=self.position):
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]


def epoch_batches(loader: Iterable, *, seed: int, epoch: int, skip: int = 0, reuse: int = 0,
                  shard: Any = None) -> Iterator:
    """One epoch of ``loader`` in an order fixed by (seed, epoch), without its first ``skip`` batches.

    - ``InMemoryLoader``: built directly at batch ``skip``; nothing is loaded twice; inputs
      gathered into a ring of ``reuse`` buffers (see ``InMemoryLoader.batches``).
    - ``torch.utils.data.DataLoader``: the iterator (its sampler order and worker seeds)
      is created under a global RNG seeded from (seed, epoch) and the outer random
      state is left untouched; skipped batches are still loaded (not trained on),
      so skipping costs the loading time of those batches.
    - any other re-iterable: its own order; skipped batches are read and dropped.

    Distributed (``shard``): this process's part of each global batch; a DataLoader is rebuilt
    on a batch sampler of its indices, so skipped batches are not even loaded.
    """
    if isinstance(loader, InMemoryLoader):
        return loader.batches(epoch, seed, start=skip, reuse=reuse, shard=shard)
    if shard is not None:
        order = sampler_order(loader.sampler, shard.num_samples, epoch_seed(seed, epoch))
        spans = (shard.span(index) for index in range(skip, len(shard)))
        return iter(_rebuilt(loader, [order[lo:hi].tolist() for lo, hi in spans],
                             epoch_seed(seed, epoch) + shard.group.rank))
    if isinstance(loader, DataLoader):
        return islice(_seeded_dataloader_iter(loader, epoch_seed(seed, epoch), epoch), skip, None)
    return islice(iter(loader), skip, None)


def sampler_order(sampler: Any, num_samples: int, seed: int) -> torch.Tensor:
    """The epoch's order of a DataLoader's sampler drawn from a generator seeded with ``seed``,
    the same on every process (distributed training splits it into shards): a RandomSampler's
    permutation, a SequentialSampler's 0..n-1, or the ``order(generator)`` of a sampler that has
    one (``LengthGroupedSampler``). Any other sampler is refused: its order cannot be sharded."""
    generator = torch.Generator().manual_seed(seed)
    if hasattr(sampler, "order"):
        return sampler.order(generator)
    if isinstance(sampler, RandomSampler):
        return torch.randperm(num_samples, generator=generator)
    if isinstance(sampler, SequentialSampler):
        return torch.arange(num_samples)
    raise ConfigError(f"distributed training draws each epoch's order itself and cannot shard a "
                      f"{type(sampler).__name__}: use shuffle=True/False, or a sampler with an "
                      f"order(generator) method returning the epoch's indices")


def _seeded_dataloader_iter(loader: DataLoader, seed: int, epoch: int) -> Iterator:
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for generator in (loader.generator, getattr(sampler, "generator", None)):
            if generator is not None:
                generator.manual_seed(seed)
        iterator = iter(loader)
        # RandomSampler draws its seed lazily, at the first batch: take it inside the fork.
        first = next(iterator, None)
    return iterator if first is None else chain([first], iterator)


def evaluation_batches(loader: Iterable, group: Any = None) -> Iterator:
    """One pass over ``loader`` in its own order; distributed, every ``world_size``-th batch on
    each process, so every sample is counted exactly once (no padding duplicates)."""
    if group is None:
        return epoch_batches(loader, seed=0, epoch=0)
    if isinstance(loader, DataLoader) and loader.batch_size is not None:
        batches = list(loader.batch_sampler)[group.rank :: group.world_size]
        return iter(_rebuilt(loader, batches, group.rank))
    return islice(epoch_batches(loader, seed=0, epoch=0), group.rank, None, group.world_size)


def _rebuilt(loader: DataLoader, batches: list[list[int]], worker_seed: int) -> DataLoader:
    """``loader``'s dataset, workers and collation over the given batches of indices."""
    workers = loader.num_workers
    return DataLoader(loader.dataset, batch_sampler=batches, num_workers=workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context if workers else None,
                      prefetch_factor=loader.prefetch_factor if workers else None,
                      generator=torch.Generator().manual_seed(worker_seed))


def windows(batches: Iterator, size: int) -> Iterator[list]:
    """Consecutive groups of ``size`` micro-batches (one optimizer step each); the last may be shorter."""
    window: list = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def unpack(batch: Any, device: torch.device) -> tuple[Any, Any, int]:
    """(inputs, targets, number of samples) on ``device``, from an ``(inputs, targets)`` or a dict batch."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        inputs, targets = to_device(batch[0], device), to_device(batch[1], device)
        return inputs, targets, targets.shape[0] if isinstance(targets, torch.Tensor) else len(targets)
    if isinstance(batch, Mapping):
        inputs = to_device(dict(batch), device)
        targets = inputs.get("labels")
        first = targets if targets is not None else next(v for v in inputs.values() if isinstance(v, torch.Tensor))
        return inputs, targets, first.shape[0]
    raise DataError(f"a batch must be (inputs, targets) or a dict, got {type(batch).__name__}")


def split(batch: tuple[Any, Any, int], size: int | None) -> list[tuple[Any, Any, int]]:
    """An unpacked ``(inputs, targets, samples)`` batch as consecutive micro-batches of at most
    ``size`` samples (``[batch]`` itself when it fits, or ``size`` is None).

    Tensors (also in a dict) and lists whose first dimension is the batch are sliced, views
    without copies; anything else (a scalar option in a dict batch) goes to every part."""
    inputs, targets, n = batch
    if size is None or n <= size:
        return [batch]
    return [(_part(inputs, lo, lo + size, n), _part(targets, lo, lo + size, n), min(size, n - lo))
            for lo in range(0, n, size)]


def _part(value: Any, lo: int, hi: int, n: int) -> Any:
    if isinstance(value, Mapping):
        return {key: _part(item, lo, hi, n) for key, item in value.items()}
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n:
        return value[lo:hi]
    if isinstance(value, (list, tuple)) and len(value) == n:
        return value[lo:hi]
    return value


def num_batches(loader: Iterable) -> int | None:
    """Batches per epoch, or None for an iterable without a length."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def train_val_test_split(
    *arrays: Any,
    train: float = 0.8,
    val: float = 0.1,
    seed: int = 0,
    stratify: Any = None,
) -> tuple:
    """Split tensors/arrays (indexed together) or one Dataset into train, val and test (seed 004).

    Sizes are ``round(n * train)``, ``round(n * val)`` and the rest. With several arrays
    each split is a tuple of them; with one array or a Dataset each split is that object.
    ``stratify`` (labels) keeps each class's share the same in every split.
    """
    if not arrays:
        raise DataError("train_val_test_split needs at least one array or a Dataset")
    if not (0 < train <= 1) or not (0 <= val < 1) or train + val > 1 + 1e-9:
        raise ConfigError(f"need 0 < train <= 1, 0 <= val < 1 and train + val <= 1; got train={train}, val={val}")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise DataError(f"arrays differ in length: {[len(a) for a in arrays]}")
    if n == 0:
        raise DataError("cannot split an empty dataset")
    rng = np.random.default_rng(seed)
    if stratify is None:
        parts = _split_indices(rng.permutation(n), train, val)
    else:
        labels = np.asarray(stratify.cpu() if isinstance(stratify, torch.Tensor) else stratify)
        if len(labels) != n:
            raise DataError(f"stratify has {len(labels)} labels for {n} samples")
        per_class = [_split_indices(rng.permutation(np.flatnonzero(labels == c)), train, val) for c in np.unique(labels)]
        parts = tuple(rng.permutation(np.concatenate([p[i] for p in per_class])) for i in range(3))
    if len(parts[0]) == 0:
        raise DataError(f"{n} samples leave the training split empty; use more data or a larger train share")
    return tuple(_take(arrays, idx) for idx in parts)


def _split_indices(order: np.ndarray, train: float, val: float) -> tuple[np.ndarray, ...]:
    n_train = int(round(len(order) * train))
    n_val = min(int(round(len(order) * val)), len(order) - n_train)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def _take(arrays: Sequence[Any], idx: np.ndarray) -> Any:
    picked = [_index(a, idx) for a in arrays]
    return picked[0] if len(picked) == 1 else tuple(picked)


def _index(array: Any, idx: np.ndarray) -> Any:
    if isinstance(array, torch.Tensor):
        return array[torch.as_tensor(idx, dtype=torch.long, device=array.device)]
    if isinstance(array, np.ndarray):
        return array[idx]
    if isinstance(array, Dataset):
        return Subset(array, idx.tolist())
    return [array[i] for i in idx]


def call_model(model: Any, inputs: Any) -> Any:
    """The model on one batch of inputs: a dict batch is passed as keyword arguments."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
