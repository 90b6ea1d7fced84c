"""trainwell against the Hugging Face Trainer and a hand-written loop on the text-classify fine-tune.

    python bench/text.py [--reps 4] [--steps 40] [--warmup-steps 3] [--eval-samples 640]
                         [--only trainwell,trainwell_random,hf_default,hf_fast,hand] [--threads N] [--note TEXT]
                         [--out bench/results/TEXT.md]

The workload (issue 24): all-MiniLM-L6-v2 with a new 2-class head on the recipe's Rotten
Tomatoes training split (its fixed split and token cache, max length 128), batch 32, AdamW
2e-5 with weight decay 0.01, 10% linear warmup then linear decay, fp32, every batch padded to
its own longest snippet. The contenders are in ``bench/contenders/text_loops.py``.

One process. First a warm-up round: every contender trains ``--warmup-steps`` steps, untimed
(first-call costs: lazy imports, kernel and allocator set-up). Then ``--reps`` repetitions;
in each, every contender trains one epoch of ``--steps`` steps over the same subset (the first
``steps x 32`` snippets of the training split) from the same pretrained weights and the same
seeded head (seed = the repetition), timed from the epoch's start to its last optimizer step,
then is evaluated by one shared function on the first ``--eval-samples`` validation snippets.
The order alternates (A B C D, then D C B A), so a slow drift of the shared machine falls on
every contender alike. Reported: samples/s per contender (median, min-max), padded tokens,
accuracy, and the ratios of issue 24's targets as the ratio of medians with a 90% bootstrap
interval that resamples whole repetitions (``bench/report.py``'s), with the per-repetition
ratios' range. Markdown goes to ``--out``, every raw figure to the same name with ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "contenders"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import text_loops as loops  # noqa: E402
from report import bootstrap_interval  # noqa: E402

RATIOS = [("trainwell", "hf_default", "≥ 1.3"), ("trainwell", "hf_fast", "≥ 1.0"), ("trainwell", "hand", ""),
          ("trainwell_api", "hf_default", "≥ 1.3"), ("trainwell_api", "hf_fast", "≥ 1.0"),
          ("trainwell_random", "hf_default", ""), ("trainwell_random", "hand", "")]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=4, help="timed repetitions (after one warm-up round)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per timed epoch (batch 32)")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps per contender before the first rep")
    p.add_argument("--eval-samples", type=int, default=640, help="validation snippets for the accuracy check")
    p.add_argument("--only", default="trainwell,trainwell_random,hf_default,hf_fast,hand",
                   help=f"comma-separated contenders, of {', '.join(loops.CONTENDERS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--note", default="", help="a line about the machine's state, put in the report")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "TEXT.md")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in loops.CONTENDERS]
    if unknown:
        sys.exit(f"text.py: unknown contender(s) {unknown}; choose from {list(loops.CONTENDERS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    warm = loops.workload(args.warmup_steps * loops.BATCH, 64)
    for name in names:
        t = time.perf_counter()
        loops.run(name, warm, seed=1000)
        print(f"warm-up {name}: {time.perf_counter() - t:.1f} s", flush=True)
    work = loops.workload(args.steps * loops.BATCH, args.eval_samples)
    rows = []
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            timing, acc = loops.run(name, work, seed=rep)
            row = {"rep": rep, "contender": name, "seconds": timing.seconds, "steps": timing.steps,
                   "samples": timing.samples, "tokens": timing.tokens, "samples_per_s": timing.samples / timing.seconds,
                   "tokens_per_s": timing.tokens / timing.seconds, "accuracy": acc,
                   "threads": torch.get_num_threads(),
                   "at": datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    elapsed = time.perf_counter() - started
    text = markdown(args, names, rows, elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "environment": environment(), "rows": rows}, indent=1))
    print(text)


def environment() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "accelerate", "tokenizers", "trainwell"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    return {**versions, "commit": commit, "python": platform.python_version(), "cpus": str(os.cpu_count()),
            "torch_threads": str(torch.get_num_threads())}


def markdown(args: argparse.Namespace, names: list[str], rows: list[dict], elapsed: float) -> str:
    env = environment()
    by = {name: [r for r in rows if r["contender"] == name] for name in names}
    lines = [
        "# text-classify: trainwell against the Hugging Face Trainer and a hand-written loop", "",
        f"`python bench/text.py --reps {args.reps} --steps {args.steps} --warmup-steps {args.warmup_steps} "
        f"--eval-samples {args.eval_samples}{f' --threads {args.threads}' if args.threads else ''}` "
        f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {env['commit']}, {elapsed / 60:.1f} min). torch {env['torch']}, transformers {env['transformers']}, "
        f"accelerate {env['accelerate']}, {env['torch_threads']} torch threads on a shared {env['cpus']}-core "
        "machine (other jobs ran beside it: absolute speeds are this machine's, not the contenders' own).",
    ]
    if args.note:
        lines += ["", args.note]
    lines += [
        "", f"Each repetition: every contender trains one epoch of {args.steps} steps (batch 32, "
        f"{args.steps * 32} snippets: the first of the recipe's training split) from the same weights and head, "
        f"timed from the epoch's start to its last optimizer step; accuracy on the first {args.eval_samples} "
        "validation snippets afterwards (one shared evaluation function).", "",
        "| contender | samples/s: median (min-max) | padded tokens per snippet | tokens/s (median) | "
        "accuracy %: mean (min-max) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, mine in by.items():
        speed = [r["samples_per_s"] for r in mine]
        acc = [r["accuracy"] for r in mine]
        lines.append(f"| {name} | {statistics.median(speed):.2f} ({min(speed):.2f}-{max(speed):.2f}) | "
                     f"{statistics.mean(r['tokens'] / r['samples'] for r in mine):.1f} | "
                     f"{statistics.median(r['tokens_per_s'] for r in mine):.0f} | "
                     f"{statistics.mean(acc):.1f} ({min(acc):.1f}-{max(acc):.1f}) |")
    lines += ["", "| ratio (samples/s) | target | ratio of medians | 90% interval (bootstrap over repetitions) | "
              "per-repetition range | accuracy difference (points, mean) |", "|---|---:|---:|---:|---:|---:|"]
    for mine, other, target in RATIOS:
        if mine not in by or other not in by:
            continue
        pairs = [(a["samples_per_s"], b["samples_per_s"]) for a in by[mine] for b in by[other] if a["rep"] == b["rep"]]
        interval = bootstrap_interval(pairs)
        per_rep = [a / b for a, b in pairs]
        ratio = statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs)
        diff = statistics.mean(r["accuracy"] for r in by[mine]) - statistics.mean(r["accuracy"] for r in by[other])
        lines.append(f"| {mine} / {other} | {target} | **{ratio:.2f}** | "
                     f"{f'{interval[0]:.2f}-{interval[1]:.2f}' if interval else 'n/a (< 3 reps)'} | "
                     f"{min(per_rep):.2f}-{max(per_rep):.2f} | {diff:+.1f} |")
    lines += ["", "Every repetition:", "", "| rep | contender | at (UTC) | seconds | samples/s | padded tokens | "
              "accuracy % |", "|---:|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['rep']} | {r['contender']} | {r['at']} | {r['seconds']:.1f} | {r['samples_per_s']:.2f} | "
              f"{r['tokens']} | {r['accuracy']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
