"""What trainwell's own features cost on the mnist recipe, measured as ratios in one run.

    python bench/overhead.py [--reps 8] [--block-epochs 20] [--out bench/results/OVERHEAD.md]

Three trainers live in one process and take turns, one epoch each (A B C A B C ...),
so that they share the machine's good and bad moments; each epoch is a ``fit`` that
continues the run by one epoch (training, validation, logging, checkpoints, final weights):

- ``bare``: health guard, gradient flow and the run directory (logging, checkpoints) all off;
- ``defaults``: everything trainwell does by default with a run directory: metrics.jsonl,
  epochs.csv, TensorBoard, gradient flow every 100 steps, the health guard, a checkpoint
  at each epoch end and the best weights;
- ``ckpt100``: the defaults plus ``checkpoint_every_steps=100`` (``--checkpoint-every 100``).

Epochs take 1-2 s, and this shared machine's speed drifts by more than the effect between
one epoch and the next, so the checkpoint slowdown is also measured at a finer grain: one
``defaults`` trainer whose step checkpoints are switched on for every other block of 100
steps (a checkpoint at the block's first step, its background fsyncs inside the block) and
off for the rest. Neighbouring blocks are ~0.15 s apart, so the median difference between
an on block and the off block next to it is the cost of one checkpoint, drift cancelled;
divided by an off block's time it is the slowdown of ``--checkpoint-every 100``.

It also counts what checkpoints cost directly (time on the training thread inside
``save_checkpoint``, CPU time of the background writer thread), times
``save_checkpoint(wait=True)`` and reports the checkpoint's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from trainwell import Trainer, checkpoint
from trainwell.config import TrainConfig
from trainwell.recipes import get_recipe
from trainwell.runtime import seed_everything

CONFIGS = ("bare", "defaults", "ckpt100")


class CheckpointCost:
    """Adds up the checkpoint time on the training thread and the writer thread's CPU time."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loop_s = 0.0
        self.writer_cpu_s = 0.0
        self.count = 0

    def install(self, trainer: Trainer) -> None:
        """Count ``trainer``'s checkpoints (only its own: others write elsewhere)."""
        mine = trainer.run_dir
        save, commit = trainer.save_checkpoint, checkpoint.StagedCheckpoint.commit

        def timed_save(*args, **kwargs):
            started = time.perf_counter()
            try:
                return save(*args, **kwargs)
            finally:
                self.loop_s += time.perf_counter() - started
                self.count += 1

        def timed_commit(staged):
            started = time.thread_time()
            try:
                return commit(staged)
            finally:
                if mine in staged.path.parents:
                    self.writer_cpu_s += time.thread_time() - started

        trainer.save_checkpoint = timed_save
        checkpoint.StagedCheckpoint.commit = timed_commit


class AlternateBlocks:
    """A callback that switches step checkpoints on for every other block of ``block`` steps
    and records each block's wall time. It runs before the run directory's ``on_step_end``,
    so a block's clock starts before the checkpoint taken at its first step."""

    def __init__(self, block: int = 100) -> None:
        self.block = block
        self.on: list[float] = []
        self.off: list[float] = []
        self.pairs: list[float] = []  # on block minus its neighbouring off block, seconds
        self._started: float | None = None
        self._epoch = -1
        self._checkpointed = False

    def on_step_end(self, trainer: Trainer, **_: object) -> None:
        if trainer.step % self.block:
            return
        now = time.perf_counter()
        if self._started is not None and trainer.epoch == self._epoch:  # blocks with an epoch end are left out
            elapsed = now - self._started
            (self.on if self._checkpointed else self.off).append(elapsed)
            if len(self.on) == len(self.off):
                self.pairs.append(self.on[-1] - self.off[-1])
        self._started, self._epoch = now, trainer.epoch
        self._checkpointed = (trainer.step // self.block) % 2 == 0
        trainer.run_directory.every = self.block if self._checkpointed else None


def block_interleave(run_dir: Path, epochs: int) -> AlternateBlocks:
    """Train one ``defaults`` trainer for ``epochs`` with checkpoints on in every other block."""
    blocks = AlternateBlocks()
    trainer, train, val = build("defaults", run_dir, callbacks=[blocks])
    trainer.fit(train, val, epochs=1)  # warm-up
    blocks.on.clear(), blocks.off.clear(), blocks.pairs.clear()
    trainer.fit(train, val, epochs=1 + epochs)
    return blocks


def build(name: str, run_dir: Path, **extra: object) -> tuple[Trainer, object, object]:
    """The mnist recipe's trainer in configuration ``name`` (plus any other Trainer options)."""
    seed_everything(0)
    parts = get_recipe("mnist").build(TrainConfig(), torch.device("cpu"))
    options = {"bare": dict(health=False, grad_flow_every=None),
               "defaults": dict(run_dir=run_dir),
               "ckpt100": dict(run_dir=run_dir, checkpoint_every_steps=100)}[name]
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, device="cpu", seed=0, **options, **extra)
    return trainer, parts.train, parts.val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=8, help="timed epochs per configuration (after one warm-up)")
    parser.add_argument("--block-epochs", type=int, default=20,
                        help="epochs of the block-interleaved measurement (checkpoints on in every other 100 steps)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "OVERHEAD.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tw-overhead-") as tmp:
        runs = {name: build(name, Path(tmp) / name) for name in CONFIGS}
        cost = CheckpointCost()
        cost.install(runs["ckpt100"][0])
        seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for rep in range(args.reps + 1):  # the first round is the warm-up
            order = CONFIGS[rep % 3:] + CONFIGS[:rep % 3]  # rotate who goes first
            if rep == 1:
                cost.reset()
            for name in order:
                trainer, train, val = runs[name]
                started = time.perf_counter()
                trainer.fit(train, val, epochs=trainer.epoch + 1)
                if rep:
                    seconds[name].append(time.perf_counter() - started)
            if rep:
                print(f"rep {rep}: " + "  ".join(f"{n} {seconds[n][-1]:.3f}s" for n in CONFIGS), flush=True)
        blocks = block_interleave(Path(tmp) / "blocks", args.block_epochs)
        samples = runs["bare"][1].num_samples
        trainer = runs["defaults"][0]
        saves = []
        for i in range(10):
            started = time.perf_counter()
            path = trainer.save_checkpoint(Path(tmp) / f"probe-{i}.ckpt", wait=True)
            saves.append(time.perf_counter() - started)
        size = path.stat().st_size
    ckpt_epoch_s = statistics.median(seconds["ckpt100"])
    lines = [
        "# trainwell's own overhead on the mnist recipe", "",
        f"`python bench/overhead.py --reps {args.reps} --block-epochs {args.block_epochs}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads). Three trainers in one process take turns, "
        "one epoch each (54,000 samples, batch 64, fused Adam; each epoch a `fit` call: training, validation, "
        "logging, checkpoints, final weights), after a warm-up epoch each.", "",
        "| configuration | samples/s (median) | vs bare (median of per-round ratios) | per-round ratios | overhead |",
        "|---|---:|---:|---|---:|",
    ]
    for name in CONFIGS:
        ratios = [b / s for s, b in zip(seconds[name], seconds["bare"])]
        ratio = statistics.median(ratios)
        lines.append(f"| {name} | {samples / statistics.median(seconds[name]):,.0f} | {ratio:.3f} | "
                     f"{', '.join(f'{r:.2f}' for r in ratios)} | {100 * (1 - ratio):+.1f}% |")
    ckpt_vs_defaults = statistics.median(d / c for c, d in zip(seconds["ckpt100"], seconds["defaults"]))
    cost_s, off_s = statistics.median(blocks.pairs), statistics.median(blocks.off)
    quartiles = statistics.quantiles(blocks.pairs, n=4)
    per_epoch = cost.count / args.reps
    lines += [
        "", f"`--checkpoint-every 100` vs the defaults, epoch by epoch: **{ckpt_vs_defaults:.3f}** (median of "
            f"per-round ratios; slowdown {100 * (1 - ckpt_vs_defaults):+.1f}%).", "",
        f"Block by block ({args.block_epochs} epochs of one `defaults` trainer, checkpoints on in every other block "
        f"of 100 steps, {len(blocks.pairs)} on/off pairs): a block without a checkpoint takes {1000 * off_s:.1f} ms, "
        f"one with a checkpoint {1000 * cost_s:+.2f} ms more (median of pair differences; quartiles "
        f"{1000 * quartiles[0]:+.2f} and {1000 * quartiles[2]:+.2f} ms): **slowdown {100 * cost_s / off_s:+.1f}%** "
        "with `--checkpoint-every 100`.", "",
        f"Counted directly: {per_epoch:.1f} checkpoints per epoch cost {1000 * cost.loop_s / cost.count:.2f} ms each "
        "on the training thread (state capture, encoding, sha256, write into the page cache) and "
        f"{1000 * cost.writer_cpu_s / cost.count:.2f} ms of CPU on the writer thread (fsync, rename, manifest): "
        f"**{100 * (cost.loop_s + cost.writer_cpu_s) / args.reps / ckpt_epoch_s:.1f}%** of the epoch "
        f"({100 * cost.loop_s / args.reps / ckpt_epoch_s:.1f}% on the training thread).", "",
        f"Checkpoint of the mnist trainer (model, Adam state, RNGs, history, callbacks): {size:,} bytes "
        f"({size / 2**20:.1f} MiB); `save_checkpoint(wait=True)` takes {1000 * statistics.median(saves):.1f} ms "
        "(median of 10: encode, sha256, write, fsync, rename, manifest).",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
