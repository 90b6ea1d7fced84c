"""Where the trainer's step time goes, against the hand-tuned loop, in one process.

    python bench/steps.py [--rounds 200] [--steps 100] [--batch-size 64] [--out bench/results/STEPS.md]

Processes on this shared machine drift by more than the trainer's own cost, so this compares
loops inside one process, in blocks of ``--steps`` optimizer steps on the mnist recipe's
data and model (fresh weights per loop, fused Adam), taking turns block by block
(A B C ... then ... C B A), and reports each loop's median ratio of block times to the
hand-tuned loop's in the same round, and the median extra time per step in microseconds.
Neighbouring blocks are ~0.2 s apart, so the drift cancels in the ratios. The extra time is
the steadier figure: this machine switches, every few seconds, between a slow and a fast mode
(2-thread kernels at about one core's speed, or two), which changes the hand-tuned step's time
by up to 2x but hardly the trainer's added time per step (its Python runs on one thread), so the
same microseconds are a larger ratio in the fast mode. The loops:

- ``hand``: ``bench/contenders/hand_tuned.py``'s loop (gather into a reused buffer, the
  fused Adam kernel called directly, the epoch loss summed on the device);
- ``minimal``: a ``Trainer`` whose step is cut down to forward, backward and its fused
  optimizer step (the loop around the step: batch generator, windows, timing);
- ``bare``: ``Trainer(health=False, grad_flow_every=None)``, no run directory;
- ``health``: the bare trainer plus the health guard;
- ``health+flow``: plus the gradient-flow record every 100 steps;
- ``defaults``: everything on by default, with a run directory whose loggers (metrics.jsonl,
  TensorBoard) stay open, as inside ``fit``.

Epoch ends (validation, checkpoints) are not in the blocks: ``bench/overhead.py`` measures those.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from trainwell import InMemoryLoader, Trainer
from trainwell.config import TrainConfig
from trainwell.events import Event
from trainwell.recipes import get_recipe
from trainwell.recipes.mnist import mlp
from trainwell.runtime import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent / "contenders"))
from _common import direct_fused_adam_step  # noqa: E402  (the hand-tuned contender's own step)

LOOPS = ("hand", "minimal", "bare", "health", "health+flow", "defaults")
LR = 1e-3


def hand_loop(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Callable[[], None]:
    """One pass over (x, y) with the hand-tuned loop: returns the function that runs it."""
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    step = direct_fused_adam_step(optimizer, LR)
    generator = torch.Generator().manual_seed(0)
    x_buffer = torch.empty((batch_size, x.shape[1]), dtype=x.dtype)
    y_buffer = torch.empty((batch_size,), dtype=y.dtype)

    def block() -> None:
        model.train()
        order = torch.randperm(len(x), generator=generator)
        loss_sum = torch.zeros(())
        for lo in range(0, len(x), batch_size):
            index = order[lo:lo + batch_size]
            xb = torch.index_select(x, 0, index, out=x_buffer)
            yb = torch.index_select(y, 0, index, out=y_buffer)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            with torch.no_grad():
                step()
            loss_sum += loss.detach() * len(index)
        float(loss_sum)

    return block


def trainer_loop(name: str, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 run_dir: Path) -> tuple[Trainer, Callable[[], None]]:
    """A ``Trainer`` in configuration ``name``, started as ``fit`` starts it, and one ``train_epoch`` of it."""
    options = {"minimal": dict(health=False, grad_flow_every=None), "bare": dict(health=False, grad_flow_every=None),
               "health": dict(grad_flow_every=None), "health+flow": {}, "defaults": dict(run_dir=run_dir)}[name]
    model = mlp()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=LR, fused=True), F.cross_entropy,
                      device="cpu", seed=0, **options)
    loader = InMemoryLoader(x, y, batch_size=batch_size, seed=0)
    trainer.events(Event.FIT_START, trainer, epochs=1, train_data=loader, val_data=None, resume=None)
    if name == "minimal":
        optimizer_step = trainer._optimizer_step

        def minimal_step(window: list) -> None:
            (inputs, targets), = window
            loss = F.cross_entropy(trainer.model(inputs), targets)
            loss.backward()
            optimizer_step.step()
            optimizer_step.zero_grad()
            trainer.position += 1
            trainer.step += 1
            trainer._meter.add_batch(loss.detach(), len(targets))

        trainer._train_step = minimal_step
    return trainer, lambda: trainer.train_epoch(loader)


def bootstrap_median(values: list[float], draws: int = 2000) -> tuple[float, float]:
    """90% bootstrap interval of the median."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.05 * draws)], medians[int(0.95 * draws)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="timed blocks per loop (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per block")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "STEPS.md")
    args = parser.parse_args()
    seed_everything(0)
    train = get_recipe("mnist").build(TrainConfig(), torch.device("cpu")).train
    samples = args.steps * args.batch_size
    x, y = (t[:samples] for t in train.tensors)
    with tempfile.TemporaryDirectory(prefix="tw-steps-") as tmp:
        trainers = {name: trainer_loop(name, x, y, args.batch_size, Path(tmp) / name) for name in LOOPS[1:]}
        blocks = {"hand": hand_loop(x, y, args.batch_size), **{name: block for name, (_, block) in trainers.items()}}
        seconds: dict[str, list[float]] = {name: [] for name in LOOPS}
        for round_ in range(args.rounds + 1):  # round 0: the warm-up
            for name in LOOPS if round_ % 2 else LOOPS[::-1]:
                started = time.perf_counter()
                blocks[name]()
                if round_:
                    seconds[name].append(time.perf_counter() - started)
        for trainer, _ in trainers.values():  # as fit ends: final weights, loggers closed
            trainer.events(Event.FIT_END, trainer, history=trainer.history)
    lines = [
        "# Where the trainer's step time goes, against the hand-tuned loop", "",
        f"`python bench/steps.py --rounds {args.rounds} --steps {args.steps} --batch-size {args.batch_size}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads). One process; the loops take turns, a block of {args.steps} steps "
        f"each (mnist recipe data and model, batch {args.batch_size}, fused Adam), {args.rounds} rounds.", "",
        "| loop | block (median) | time / hand-tuned loop's in the same round: median (90% interval) | quartiles "
        "| extra time per step over the hand-tuned loop: median (90% interval) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in LOOPS:
        ratios = [mine / hand for mine, hand in zip(seconds[name], seconds["hand"])]
        lo, hi = bootstrap_median(ratios)
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        extra = [1e6 * (mine - hand) / args.steps for mine, hand in zip(seconds[name], seconds["hand"])]
        extra_lo, extra_hi = bootstrap_median(extra)
        lines.append(f"| {name} | {1000 * statistics.median(seconds[name]):.1f} ms | "
                     f"**{statistics.median(ratios):.3f}** ({lo:.3f}-{hi:.3f}) | {q1:.3f}-{q3:.3f} | "
                     f"{statistics.median(extra):.0f} µs ({extra_lo:.0f}-{extra_hi:.0f}) |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
