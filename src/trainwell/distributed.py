"""Distributed training under ``torchrun``: the process group, the data shards, and the few
collectives the loop needs. Thin and explicit, as nanoGPT's is:

- ``Group.from_environment()`` joins the process group when a launcher set ``RANK`` and
  ``WORLD_SIZE`` (gloo on CPU, NCCL on CUDA, one device per local rank); nothing otherwise.
- Gradients are summed across processes by DDP on the last micro-batch of a window only
  (``no_sync`` before); each process weighs its micro-batches by their share of the samples
  of the whole window on every process, so the update is the one-process update, ragged
  windows included.
- One all-reduce per step (the window's loss, and whether a process was asked to stop; started
  before the last backward, so it overlaps it), one per epoch record (the metric sums), one
  gather per checkpoint (each process's RNG and meter).
- Only the main process (rank 0) writes files and prints.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

_failed = False  # this process is ending on an error (see note_failure)


@dataclass(frozen=True)
class Group:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_environment() -> "Group | None":
        """Join the process group a launcher described in the environment; None when not launched so."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
            return None
        import torch.distributed as dist

        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            atexit.register(_leave)  # a group left to the interpreter's teardown can abort the process
            sys.excepthook = functools.partial(_note_uncaught, sys.excepthook)
        return Group(dist.get_rank(), dist.get_world_size(), local_rank)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank; CPU processes share the CPU."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DDP (rank 0's weights broadcast to every process), gradients summed, not averaged."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
        wrapped.register_comm_hook(None, _sum_hook)
        return wrapped

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over every process (in place; returned for chaining)."""
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor

    def agree(self, loss: torch.Tensor, stop: bool) -> "Agreement":
        """Start summing the window's loss over every process, with whether any process was asked to
        stop: one all-reduce, started before the window's last backward so that it overlaps it."""
        import torch.distributed as dist

        packed = torch.stack([loss.detach().float().reshape(()), torch.tensor(float(stop), device=loss.device)])
        return Agreement(packed, dist.all_reduce(packed, async_op=True))

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, by rank (plain data and CPU tensors)."""
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


@dataclass
class Agreement:
    """An all-reduce of (window loss, stop) in flight; ``wait()`` gives (the loss over every process, stop)."""

    packed: torch.Tensor
    work: Any

    def wait(self) -> tuple[torch.Tensor, bool]:
        self.work.wait()
        return self.packed[0], bool(self.packed[1] > 0)


def note_failure() -> None:
    """This process ends on an error: at exit it leaves at once instead of waiting for the others."""
    global _failed
    _failed = True


def _leave() -> None:
    """At exit, with the interpreter still whole: wait for every process (unless this one failed),
    then destroy the group. Without the wait, gloo's worker threads may still be releasing the
    last collective's tensors, which takes the GIL; during the interpreter's teardown that
    aborts the process ("terminate called without an active exception", pytorch #179291):
    7 of 30 two-process runs here, none of 30 with the wait."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if not _failed:
        if dist.get_backend() == "gloo":  # bounded: a process that left without saying so cannot hang the rest
            dist.monitored_barrier(timeout=timedelta(minutes=5))
        else:
            dist.barrier()
    dist.destroy_process_group()


def _note_uncaught(previous, kind, value, traceback) -> None:  # noqa: ANN001 - sys.excepthook's arguments
    note_failure()
    previous(kind, value, traceback)


def _sum_hook(_state, bucket):  # noqa: ANN001, ANN202 - DDP checks the annotations; strings would fail it
    """DDP communication hook: sum the gradient bucket over processes (DDP's default divides by
    the world size; the loss weights already make each sample count once)."""
    import torch.distributed as dist

    future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


@dataclass(frozen=True)
class Shard:
    """One process's part of each global batch of an epoch.

    A global batch is ``batch_size x world_size`` consecutive samples of the epoch's order
    (the one-process batch of that size); process ``r`` takes the ``r``-th of its even parts.
    The last, ragged global batch is split as evenly as it goes, so every process steps the
    same number of times and every sample of the epoch is seen once (a last batch with fewer
    samples than processes is dropped: it would leave a process without data).
    """

    num_samples: int
    batch_size: int
    group: Group
    drop_last: bool = False

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.group.world_size

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch)
        return full + (1 if rest >= self.group.world_size and not self.drop_last else 0)

    def global_size(self, index: int) -> int:
        """Samples in global batch ``index`` over every process."""
        return min(self.global_batch, self.num_samples - index * self.global_batch)

    def span(self, index: int) -> tuple[int, int]:
        """This process's ``[start, end)`` in the epoch's order for global batch ``index``."""
        start, size = index * self.global_batch, self.global_size(index)
        world, rank = self.group.world_size, self.group.rank
        part, extra = divmod(size, world)
        lo = start + rank * part + min(rank, extra)
        return lo, lo + part + (1 if rank < extra else 0)


def shard_of(loader: Any, group: Group | None) -> Shard | None:
    """This process's shard of a training loader; None when not distributed.

    trainwell shards an ``InMemoryLoader`` and a batched ``DataLoader`` itself; any other
    iterable cannot be split without reading it, so it is refused.
    """
    if group is None:
        return None
    from torch.utils.data import DataLoader

    from trainwell.data import InMemoryLoader
    from trainwell.errors import ConfigError

    if isinstance(loader, InMemoryLoader):
        return Shard(loader.num_samples, loader.batch_size, group, loader.drop_last)
    if isinstance(loader, DataLoader) and loader.batch_size is not None:
        return Shard(len(loader.dataset), loader.batch_size, group, loader.drop_last)
    raise ConfigError(f"distributed training shards a tw.InMemoryLoader or a DataLoader with a batch_size; "
                      f"got {type(loader).__name__}: wrap the data in one of them")
