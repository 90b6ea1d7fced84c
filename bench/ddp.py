"""trainwell under torchrun (2 processes x 1 thread, gloo) against a hand-written DDP loop on the
mnist recipe's data, model and optimizer at the same per-process batch; repetitions interleaved
(ABBA), paired per repetition. Writes bench/results/DDP.md (and .json).

    python bench/ddp.py [--reps 6] [--epochs 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "ddp_worker.py"


def launch(mode: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_LAUNCHED": repr(time.time())}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(WORKER), mode,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))


def interval(ratios: list[float], draws: int = 2000, level: float = 0.9) -> tuple[float, float]:
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(draws * (1 - level) / 2)], medians[int(draws * (1 + level) / 2) - 1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=HERE / "results" / "DDP.md")
    args = p.parse_args()
    runs: list[dict] = []
    for rep in range(args.reps):
        order = ("hand", "trainwell") if rep % 2 == 0 else ("trainwell", "hand")
        for mode in order:
            result = launch(mode, args)
            runs.append({"rep": rep, **result})
            print(json.dumps(runs[-1]), flush=True)
    by = {mode: {r["rep"]: r for r in runs if r["mode"] == mode} for mode in ("hand", "trainwell")}
    ratios = [by["trainwell"][k]["samples_per_sec"] / by["hand"][k]["samples_per_sec"] for k in range(args.reps)]
    lo, hi = interval(ratios)
    median = {m: statistics.median(r["samples_per_sec"] for r in by[m].values()) for m in by}
    start = {m: statistics.median(r["launch_to_first_all_reduce_s"] for r in by[m].values()) for m in by}
    init = statistics.median(r["init_process_group_s"] for r in runs)
    lines = [
        "# DDP: trainwell under torchrun vs a hand-written DDP loop",
        "",
        f"`python bench/ddp.py --reps {args.reps} --epochs {args.epochs} --batch-size {args.batch_size}`, "
        f"{time.strftime('%Y-%m-%d')}: 2 processes x 1 thread (gloo), per-process batch {args.batch_size} "
        f"(global {2 * args.batch_size}), the mnist recipe (54k samples), median of {args.epochs} timed epochs "
        "after a warm-up epoch, repetitions interleaved.",
        "",
        "| loop | median samples/s |",
        "|---|---:|",
        f"| hand-written DDP loop | {median['hand']:,.0f} |",
        f"| trainwell (`tw.Trainer`, defaults, no run directory) | {median['trainwell']:,.0f} |",
        "",
        f"trainwell / hand-written, paired per repetition: **{statistics.median(ratios):.3f}** "
        f"(90% bootstrap interval {lo:.3f}-{hi:.3f}; per repetition {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"overhead {1 - statistics.median(ratios):+.1%}.",
        "",
        f"Start-up: launch to the first all-reduce {start['hand']:.2f} s / {start['trainwell']:.2f} s "
        f"(hand / trainwell, median; torchrun itself, Python and `import torch` in each worker), of which "
        f"`init_process_group` {init:.3f} s.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
