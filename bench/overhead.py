"""What trainwell's own features cost on the mnist recipe, measured as ratios in one run.

    python bench/overhead.py [--reps 5] [--epochs 2] [--out bench/OVERHEAD.md]

Configurations, each in its own process, interleaved (A B C A B C ...):

- ``bare``: health guard, gradient flow and the run directory (logging, checkpoints) all off;
- ``defaults``: everything trainwell does by default with a run directory: metrics.jsonl,
  epochs.csv, TensorBoard, gradient flow every 100 steps, the health guard, a checkpoint
  at each epoch end and the best weights;
- ``ckpt100``: the defaults plus ``checkpoint_every_steps=100`` (``--checkpoint-every 100``).

Each process times ``fit`` over the whole run (training, validation, checkpoints) and
reports samples/s. A separate process times ``save_checkpoint`` for the mnist trainer
and reports the checkpoint's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("bare", "defaults", "ckpt100")

JOB = r"""
import json, sys, tempfile, time, torch
from trainwell import Trainer
from trainwell.config import TrainConfig
from trainwell.recipes import get_recipe
from trainwell.runtime import seed_everything
config_name, epochs = sys.argv[1], int(sys.argv[2])
seed_everything(0)
parts = get_recipe("mnist").build(TrainConfig(epochs=epochs), torch.device("cpu"))
with tempfile.TemporaryDirectory() as tmp:
    options = {"bare": dict(health=False, grad_flow_every=None),
               "defaults": dict(run_dir=tmp),
               "ckpt100": dict(run_dir=tmp, checkpoint_every_steps=100)}[config_name]
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, device="cpu", seed=0, **options)
    started = time.perf_counter()
    trainer.fit(parts.train, parts.val, epochs=epochs)
    seconds = time.perf_counter() - started
    if config_name == "defaults":
        times = []
        for i in range(10):
            t0 = time.perf_counter(); path = trainer.save_checkpoint(f"{tmp}/probe-{i}.ckpt"); times.append(time.perf_counter() - t0)
        size = path.stat().st_size
    else:
        times, size = [], None
print(json.dumps({"config": config_name, "samples_per_sec": parts.train.num_samples * epochs / seconds,
                  "seconds": seconds, "save_s": statistics.median(times) if times else None, "size": size}))
""".replace("statistics.median", "__import__('statistics').median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("OVERHEAD.md"))
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for rep in range(args.reps):
        for name in CONFIGS:
            out = subprocess.run([sys.executable, "-c", JOB, name, str(args.epochs)], capture_output=True, text=True,
                                 check=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"rep {rep + 1} {name:9s} {results[name][-1]['samples_per_sec']:9.0f} samples/s", flush=True)
    median = {name: statistics.median(r["samples_per_sec"] for r in runs) for name, runs in results.items()}
    paired = {name: [r["samples_per_sec"] / b["samples_per_sec"] for r, b in zip(runs, results["bare"])]
              for name, runs in results.items()}
    saves = [r["save_s"] for r in results["defaults"]]
    lines = [
        "# trainwell's own overhead on the mnist recipe", "",
        f"`python bench/overhead.py --reps {args.reps} --epochs {args.epochs}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.epochs} epochs of 54,000 samples per process, "
        "batch 64, fit() timed whole: training, validation, logging, checkpoints)", "",
        "| configuration | samples/s (median) | vs bare (median) | paired ratios | overhead |",
        "|---|---:|---:|---|---:|",
    ]
    for name in CONFIGS:
        ratio = median[name] / median["bare"]
        pairs = ", ".join(f"{p:.3f}" for p in paired[name])
        lines.append(f"| {name} | {median[name]:,.0f} | {ratio:.3f} | {pairs} | {100 * (1 - ratio):+.1f}% |")
    size = results["defaults"][0]["size"]
    lines += ["", f"Checkpoint of the mnist trainer (model, Adam state, health-guard snapshot, RNGs, history): "
                  f"{size:,} bytes ({size / 2**20:.1f} MiB), saved in {1000 * statistics.median(saves):.1f} ms "
                  "(median; serialise, write, fsync, rename, manifest with sha256)."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
