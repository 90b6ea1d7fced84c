"""One process of the DDP benchmark (run by bench/ddp.py under torchrun, 1 thread each).

``hand``: a hand-written DDP loop (nanoGPT style): the mnist recipe's data in memory, a
per-epoch seeded permutation split into global batches of batch x world samples, each
process taking its contiguous part (trainwell's sharding), the 784-256-128-10 MLP in DDP,
fused Adam, the functional cross-entropy, no per-step host sync.
``trainwell``: ``tw.Trainer`` with the recipe's parts and its defaults (health guard, gradient
flow, one all-reduce per step), no run directory.
Rank 0 prints one JSON line: samples/s of the timed epochs, and the process-group start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import time

STARTED = time.time()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainwell.config import validate  # noqa: E402
from trainwell.recipes import get_recipe, recipe_defaults  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("hand", "trainwell"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs, after one warm-up epoch")
    args = p.parse_args()
    launched = float(os.environ.get("BENCH_LAUNCHED", STARTED))
    joined = time.perf_counter()
    dist.init_process_group("gloo")
    probe = torch.ones(1)
    dist.all_reduce(probe)
    startup = {"launch_to_first_all_reduce_s": time.time() - launched,
               "init_process_group_s": time.perf_counter() - joined}
    config = validate({**recipe_defaults("mnist"), "recipe": "mnist", "batch_size": args.batch_size})
    parts = get_recipe("mnist").build(config, torch.device("cpu"))
    timed = run_hand(parts, args) if args.mode == "hand" else run_trainwell(parts, args)
    if dist.get_rank() == 0:
        print(json.dumps({"mode": args.mode, "samples_per_sec": timed, **startup}))
    dist.destroy_process_group()


def run_hand(parts, args) -> float:
    from torch.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = parts.train.tensors
    model = DistributedDataParallel(parts.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    n, bs = len(x), args.batch_size
    global_batch = bs * world
    gen = torch.Generator().manual_seed(0)
    rates = []
    for epoch in range(1 + args.epochs):
        started = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum = torch.zeros(())
        for start in range(0, n, global_batch):
            size = min(global_batch, n - start)
            part, extra = divmod(size, world)
            lo = start + rank * part + min(rank, extra)
            idx = order[lo:lo + part + (1 if rank < extra else 0)]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * len(idx)
        float(loss_sum)
        if epoch:
            rates.append(n / (time.perf_counter() - started))
    return sorted(rates)[len(rates) // 2]


def run_trainwell(parts, args) -> float:
    import trainwell as tw

    trainer = tw.Trainer(parts.model, parts.optimizer, parts.loss_fn, device="cpu", seed=0)
    trainer.fit(parts.train, epochs=1)  # the warm-up epoch
    rates = []
    for epoch in range(args.epochs):
        trainer.fit(parts.train, epochs=2 + epoch)
        rates.append(trainer.history["samples_per_sec"][-1])
    return sorted(rates)[len(rates) // 2]


if __name__ == "__main__":
    main()
