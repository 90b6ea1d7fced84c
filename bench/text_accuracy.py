"""Accuracy parity on the whole text-classify fine-tune: trainwell against the Hugging Face Trainer.

    python bench/text_accuracy.py [--seeds 0,1] [--only trainwell,hf_fast] [--threads N]
                                  [--note TEXT] [--out bench/results/TEXT-ACCURACY.md]

``bench/text.py`` times short epochs; its accuracy check is weak (after 40 steps every model
predicts the majority class). This runs the real length instead: the recipe's whole training
split (10,201 snippets), 3 epochs, batch 32, AdamW 2e-5, 10% warmup then linear decay, max
length 128, then accuracy on the recipe's test split (1,276 snippets), per seed.

- ``trainwell``: ``trainwell train text-classify --seed S`` in a subprocess, exactly as a
  user types it (the recipe's defaults, length-grouped batches included); its accuracy is the
  run's own ``test`` record, its time the run's ``wall_time_s`` (its training: 3 epochs,
  per-epoch validation and checkpoints; the whole command, loading, the test pass and the
  Hugging Face export included, is in the JSON as ``command_s``).
- ``hf_fast`` / ``hf_default``: ``transformers.Trainer`` as in ``bench/contenders/text_loops.py``
  (fastest documented CPU settings with ``group_by_length``, or its defaults), 3 epochs over
  the same split from the same pretrained weights; accuracy from one shared function on the
  test split, time from its first epoch's start to its last optimizer step (no validation).

The seeds' order alternates (A B, then B A). Markdown to ``--out``, raw figures beside it as ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH / "contenders"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import text_loops as loops  # noqa: E402

EPOCHS = 3


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds; every contender runs each")
    p.add_argument("--only", default="trainwell,hf_fast", help="comma-separated: trainwell, hf_fast, hf_default")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--note", default="", help="a line about the machine's state, put in the report")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "TEXT-ACCURACY.md")
    return p.parse_args()


def full_workload() -> loops.Workload:
    """The recipe's whole training split, with its test split in the evaluation slot."""
    work = loops.workload(10**9, 0)
    corpus = loops.recipe.corpus_for(work.config, work.tokenizer, work.model_dir)
    train, _, test = corpus.splits
    return replace(work, train=train, val=test)


def run_trainwell(seed: int, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="tw-text-accuracy-") as run_dir:
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        command = [sys.executable, "-m", "trainwell", "train", "text-classify", "--seed", str(seed),
                   "--run-dir", run_dir]
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return {"accuracy": 100.0 * summary["test_acc"], "seconds": summary["wall_time_s"], "command_s": elapsed,
            "test_samples": summary["test_samples"]}


def run_hf(work: loops.Workload, seed: int, fast: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="tw-text-accuracy-hf-") as run_dir:
        timing, model = loops.run_hf(work, seed, run_dir, fast=fast, epochs=EPOCHS)
    return {"accuracy": loops.accuracy(model, work), "seconds": timing.seconds,
            "samples_per_s": timing.samples / timing.seconds, "test_samples": len(work.val[0])}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    work = full_workload() if any(n.startswith("hf") for n in names) else None
    rows = []
    for i, seed in enumerate(seeds):
        for name in names if i % 2 == 0 else names[::-1]:
            at = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
            result = (run_trainwell(seed, args.threads) if name == "trainwell"
                      else run_hf(work, seed, fast=name == "hf_fast"))
            rows.append({"contender": name, "seed": seed, "at": at, **result})
            print(f"{name} seed {seed}: {result['accuracy']:.2f}% in {result['seconds']:.0f} s", flush=True)
    write(args, rows)


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=BENCH).stdout.strip()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# text-classify: test accuracy after the whole fine-tune, trainwell against the Hugging Face Trainer",
             "", f"`python bench/text_accuracy.py --seeds {args.seeds} --only {args.only}"
             f"{f' --threads {args.threads}' if args.threads else ''}` ({stamp}, commit {commit}). "
             f"{args.note}".rstrip(), "",
             f"Every run: the recipe's training split, {EPOCHS} epochs, batch 32, AdamW 2e-5, then the test split.",
             "", "| contender | seeds | test accuracy %: mean (each seed) | seconds: mean |", "|---|---:|---:|---:|"]
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["contender"], []).append(row)
    for name, runs in by_name.items():
        accs = [r["accuracy"] for r in runs]
        each = ", ".join(f"{a:.2f}" for a in accs)
        lines.append(f"| {name} | {len(runs)} | {statistics.mean(accs):.2f} ({each}) | "
                     f"{statistics.mean(r['seconds'] for r in runs):.0f} |")
    if "trainwell" in by_name:
        base = statistics.mean(r["accuracy"] for r in by_name["trainwell"])
        for name, runs in by_name.items():
            if name != "trainwell":
                diff = base - statistics.mean(r["accuracy"] for r in runs)
                lines.append(f"\ntrainwell - {name}: **{diff:+.2f} points** of test accuracy (target: within ±1).")
    lines += ["", "| contender | seed | at (UTC) | test accuracy % | seconds |", "|---|---:|---|---:|---:|"]
    lines += [f"| {r['contender']} | {r['seed']} | {r['at']} | {r['accuracy']:.2f} | {r['seconds']:.0f} |"
              for r in rows]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
