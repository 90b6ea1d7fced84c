"""Benchmark trainwell against the seeds' loops and the other trainers on seed 000's workload.

One command::

    python bench/run.py [--batch-sizes 64 512] [--reps 3] [--epochs 1] [--device cpu|cuda]
                        [--only NAME,...] [--threads N] [--pause S] [--out bench/results/RESULTS.md]

The workload (issue 5): the 235,146-parameter MLP of seed 000 on full MNIST (the first
54,000 training images; final accuracy on the official 10k test set), Adam lr 1e-3,
cross-entropy. Each contender is a short script in ``bench/contenders/`` that trains one
warm-up epoch and then ``--epochs`` timed epochs, validates once at the end, and prints
one JSON line (samples/s of the timed epochs, validation accuracy, import time, wall
time, peak RSS, torch threads). A framework that is not installed prints
``{"skipped": reason}``; install them with ``pip install -e '.[bench]'``.

Every contender runs in its own process (``sys.executable``), interleaved: for each
repetition, for each batch size, every contender once, in an order shuffled afresh (seeded by
the repetition) each time: a rotation would keep every contender behind the same neighbour, and
the 7-repetition run of 3066e83 put the recipe behind Keras in every repetition. The report
gives the median samples/s with min/max, the medians of whole-process wall time, import
time and peak RSS, the final accuracy, the ratios issue 5's acceptance asks for (ratio of
the medians with a 90% bootstrap interval over the repetitions, and the range of the
per-repetition ratios, which pair runs made minutes apart), the same ratios for each
process's fastest timed epoch (other jobs on a shared machine only ever slow an epoch down)
and the startup times of ``trainwell --help``, ``import trainwell`` and ``import torch``
(``bench/report.py`` writes the tables). It is written to ``--out`` (markdown) and printed.

``--only`` takes names (``lightning``) or name:variant (``lightning:fast``).
``--threads N`` sets ``OMP_NUM_THREADS`` for every contender (default: torch's own choice);
on a shared machine whose other cores are busy, ``--threads 1`` avoids OpenMP spin-waits
that slow a 2-thread process by 10x or more and swamp every difference being measured.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import markdown, ratio_rows, summarise  # noqa: E402  (bench/ is not a package)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONTENDERS = [
    ("trainwell_recipe", "default"),
    ("trainwell_dataloader", "default"),
    ("seed_loop", "default"),
    ("hand_tuned", "default"),
    ("lightning", "default"),
    ("lightning", "fast"),
    ("hf_trainer", "default"),
    ("hf_trainer", "fast"),
    ("ignite", "default"),
    ("ignite", "fast"),
    ("keras", "default"),
    ("keras", "fast"),
]
PACKAGES = ["torch", "numpy", "lightning", "pytorch-ignite", "transformers", "accelerate", "keras"]


def label(name: str, variant: str) -> str:
    return name if variant == "default" and name.startswith(("trainwell", "seed", "hand")) else f"{name}:{variant}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per process, after one warm-up epoch")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--only", default=None, help="comma-separated contenders: NAME or NAME:VARIANT")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the contenders")
    p.add_argument("--startup-runs", type=int, default=7, help="runs per startup measurement (median)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds before a contender is killed")
    p.add_argument("--pause", type=float, default=2.0,
                   help="seconds of rest before each contender, so one process's exit (freeing ~800 MiB) "
                        "is not paid by the next")
    p.add_argument("--out", default=str(BENCH / "results" / "RESULTS.md"))
    return p.parse_args()


def selected(only: str | None) -> list[tuple[str, str]]:
    if not only:
        return CONTENDERS
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    picked = [(n, v) for n, v in CONTENDERS if n in wanted or f"{n}:{v}" in wanted]
    unknown = [w for w in wanted if not any(w in (n, f"{n}:{v}") for n, v in CONTENDERS)]
    if unknown:
        sys.exit(f"run.py: unknown contender(s) {unknown}; choose from {sorted({n for n, _ in CONTENDERS})}")
    return picked


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_contender(name: str, variant: str, batch_size: int, args: argparse.Namespace, env: dict,
                  seed: int = 0) -> dict:
    """One contender in its own process; repetition r uses seed r, so medians average over seeds."""
    cmd = [sys.executable, str(BENCH / "contenders" / f"{name}.py"), "--batch-size", str(batch_size),
           "--epochs", str(args.epochs), "--device", args.device, "--variant", variant, "--seed", str(seed)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"contender": name, "variant": variant, "error": f"timed out after {args.timeout:.0f}s"}
    wall = time.perf_counter() - started
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            if result.get("contender") == name:
                result.update(variant=variant, process_wall_s=wall)
                return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"contender": name, "variant": variant, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}


def startup(runs: int, env: dict) -> dict[str, float | str]:
    """Median wall time of a few short commands (one uncounted run first, for the file cache)."""
    script = Path(sys.executable).with_name("trainwell")
    trainwell_cmd = [str(script)] if script.exists() else [shutil.which("trainwell") or "trainwell"]
    commands = {
        "trainwell --help": [*trainwell_cmd, "--help"],
        "python -c 'import trainwell'": [sys.executable, "-c", "import trainwell"],
        "python -c 'import trainwell; trainwell.Trainer'": [sys.executable, "-c", "import trainwell; trainwell.Trainer"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'pass'": [sys.executable, "-c", "pass"],
    }
    out: dict[str, float | str] = {}
    for text, cmd in commands.items():
        times = []
        for i in range(runs + 1):
            t = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True)
            if proc.returncode != 0:
                out[text] = f"failed (exit {proc.returncode})"
                break
            if i:
                times.append(time.perf_counter() - t)
        else:
            out[text] = statistics.median(times)
    return out


def environment(results: list[dict], args: argparse.Namespace) -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in PACKAGES:
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    threads = sorted({r["torch_threads"] for r in results if "torch_threads" in r})
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        commit += " + uncommitted changes in src/" if dirty else ""
    except OSError:
        commit = "?"
    gpu = ""
    if args.device == "cuda":
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True).stdout.strip()
        except OSError:
            gpu = "?"
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs" + (f", GPU {gpu}" if gpu else ""),
        "python": platform.python_version(),
        "versions": ", ".join(versions),
        "torch threads (torch.get_num_threads() in the contenders)": ", ".join(map(str, threads)) or "?",
        "OMP_NUM_THREADS": str(args.threads) if args.threads is not None else "unset (torch default)",
        "trainwell commit": commit,
    }



def main() -> None:
    args = parse_args()
    contenders = selected(args.only)
    env = child_env(args.threads)
    sys.path.insert(0, str(BENCH / "contenders"))
    import _common  # noqa: E402  (builds the MNIST cache once, before any timing)

    _common.ensure_cache()
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    loads = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    results: list[dict] = []
    order = [label(n, v) for n, v in contenders]
    total = args.reps * len(args.batch_sizes) * len(contenders)
    done = 0
    for rep in range(args.reps):
        for bs in args.batch_sizes:
            for name, variant in random.Random(f"{rep}/{bs}").sample(contenders, len(contenders)):
                done += 1
                time.sleep(args.pause)
                result = run_contender(name, variant, bs, args, env, seed=rep)
                result.update(rep=rep, batch_size_asked=bs, label=label(name, variant))
                results.append(result)
                what = (f"{result['samples_per_s']:,.0f} samples/s, acc {result['val_acc']:.2f}%, "
                        f"wall {result['process_wall_s']:.1f}s" if "samples_per_s" in result
                        else result.get("skipped") or result.get("error"))
                print(f"[{done}/{total}] rep {rep + 1} batch {bs} {label(name, variant)}: {what}",
                      file=sys.stderr, flush=True)
    start = startup(args.startup_runs, env)
    elapsed = time.perf_counter() - t0
    loads.append(os.getloadavg()[0])
    table = summarise(results, order, args.batch_sizes)
    ratios = ratio_rows(table)
    text = markdown(args, environment(results, args), table, ratios, start, order, command, loads, elapsed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "results": results, "startup": start},
                                                   indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
