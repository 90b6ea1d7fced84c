"""Benchmark trainwell against the seeds' loops and the other trainers on seed 000's workload.

One command::

    python bench/run.py [--batch-sizes 64 512] [--reps 3] [--epochs 1] [--device cpu|cuda]
                        [--only NAME,...] [--threads N] [--pause S] [--out bench/RESULTS.md]

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
the medians, and the range of the per-repetition ratios, which pair runs made minutes
apart), the same ratios for each process's fastest timed epoch (other jobs on a shared
machine only ever slow an epoch down) and the startup times of ``trainwell --help``, ``import trainwell`` and
``import torch``. It is written to ``--out`` (markdown) and printed.

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


# (description, numerator, denominator, batch size, target, kind) — kind "speed" (higher is better)
# or "rss" (numerator / denominator must stay at or below the target).
RATIOS = [
    ("trainwell_recipe / seed_loop", "trainwell_recipe", "seed_loop", 64, 1.8, "speed"),
    ("trainwell_recipe / lightning default", "trainwell_recipe", "lightning:default", 64, 3.0, "speed"),
    ("trainwell_recipe / hand_tuned", "trainwell_recipe", "hand_tuned", 64, 0.97, "speed"),
    ("trainwell_dataloader / seed_loop", "trainwell_dataloader", "seed_loop", 64, 0.95, "speed"),
    ("trainwell_recipe / hand_tuned", "trainwell_recipe", "hand_tuned", 512, 0.97, "speed"),
    ("peak RSS trainwell_recipe / hand_tuned", "trainwell_recipe", "hand_tuned", 64, 1.10, "rss"),
    ("peak RSS trainwell_recipe / hand_tuned", "trainwell_recipe", "hand_tuned", 512, 1.10, "rss"),
]


NOTES = """\
- Samples/s counts the timed epochs only (clock started when the second epoch starts, stopped after the
  last epoch's end-of-epoch work: trainwell's checkpoint, Lightning's checkpoint/logging); import, data
  preparation, the warm-up epoch and the final validation are in the process wall time.
- The fastest-epoch figures take each process's quickest timed epoch. Work a trainer does every epoch
  (trainwell's and Lightning's epoch-end checkpoints, logging) is inside every epoch; work done once at the
  end of the run (trainwell's final weights and closing its logs, about 20 ms) falls in the last epoch only.
- Accuracy after 2 epochs depends on the seed and on float rounding: contenders with identical math give
  identical accuracy (seed_loop, ignite:default and lightning:default share torch's seed-0 init and all end at
  the same value), and switching Adam to its fused kernel alone moves the result by about 0.3 points. A spread
  a little above 0.5 points here is that chaos, not a contender doing less work: every contender runs the
  same number of samples, epochs, optimizer steps and the same end-of-run validation.
- With other jobs on the machine, a 2-thread torch process that loses a core spin-waits in OpenMP and slows
  down 10x or more; `--threads 1` keeps the comparison about the trainers rather than about the scheduler."""


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
    p.add_argument("--out", default=str(BENCH / "RESULTS.md"))
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


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fastest_epoch(run: dict) -> float:
    """Samples/s of a process's fastest timed epoch. Another job on the machine can only slow an
    epoch down, so the fastest one is the closest to the contender's own speed."""
    epochs = run.get("epoch_s") or [run["timed_s"]]
    return run["samples_per_s"] * run["timed_s"] / len(epochs) / min(epochs)


def summarise(results: list[dict], order: list[str], batch_sizes: list[int]) -> dict:
    table: dict[int, dict[str, dict]] = {}
    for bs in batch_sizes:
        table[bs] = {}
        for lab in order:
            runs = [r for r in results if r.get("batch_size_asked") == bs and r["label"] == lab]
            ok = [r for r in runs if "samples_per_s" in r]
            row: dict = {"runs": ok, "n": len(ok)}
            if not ok:
                row["note"] = next((r.get("skipped") or r.get("error") for r in runs), "no runs")
            else:
                sps = [r["samples_per_s"] for r in ok]
                for r in ok:
                    r["fastest_epoch_per_s"] = fastest_epoch(r)
                row.update(
                    median=med(sps), min=min(sps), max=max(sps), fastest=med([r["fastest_epoch_per_s"] for r in ok]),
                    wall=med([r["process_wall_s"] for r in ok]), imp=med([r["import_s"] for r in ok]),
                    rss=med([r["peak_rss_mib"] for r in ok]), acc=med([r["val_acc"] for r in ok]),
                    acc_all=[r["val_acc"] for r in ok],
                    errors=len(runs) - len(ok),
                )
            table[bs][lab] = row
    return table


def ratio_rows(table: dict) -> list[dict]:
    rows = []
    for text, num, den, bs, target, kind in RATIOS:
        if bs not in table or num not in table[bs] or den not in table[bs]:
            continue
        a, b = table[bs][num], table[bs][den]
        if not a.get("n") or not b.get("n"):
            rows.append({"text": text, "bs": bs, "target": target, "kind": kind, "value": None})
            continue
        row = {"text": text, "bs": bs, "target": target, "kind": kind}
        # the two contenders' runs of each repetition (the first, if one ran twice), paired once for every measure
        runs_a, runs_b = ({r["rep"]: r for r in reversed(side["runs"])} for side in (a, b))
        pairs = [(run_a, runs_b[rep]) for rep, run_a in runs_a.items() if rep in runs_b]
        # output prefix -> (summary key, per-run field): the plain ratio, and for speed the fastest-epoch one
        measures = ({"": ("median", "samples_per_s"), "fastest_": ("fastest", "fastest_epoch_per_s")}
                    if kind == "speed" else {"": ("rss", "peak_rss_mib")})
        for prefix, (key, field) in measures.items():
            per_rep = [ra[field] / rb[field] for ra, rb in pairs]
            value = a[key] / b[key]
            row.update({f"{prefix}value": value, f"{prefix}lo": min(per_rep) if per_rep else None,
                        f"{prefix}hi": max(per_rep) if per_rep else None,
                        f"{prefix}ok": value >= target if kind == "speed" else value <= target})
        rows.append(row)
    return rows


def markdown(args, env, table, ratios, start, order, command, loads, elapsed) -> str:
    out = ["# trainwell benchmark: seed 000's MNIST MLP", ""]
    out += ["Produced by:", "", "```", command, "```", ""]
    out += [f"- {k}: {v}" for k, v in env.items()]
    out += [f"- load average (1 min) before / after the run: {loads[0]:.2f} / {loads[1]:.2f}"
            f" (the machine is shared: read the ratios, not the absolute numbers)",
            f"- {args.reps} repetitions, interleaved; each process: 1 warm-up epoch + {args.epochs} timed "
            f"epoch(s) of 54,000 samples, validation once at the end on the 10k test set; total {elapsed / 60:.1f} min",
            ""]
    out += ["## Acceptance ratios (issue 5)", "",
            "Ratio of the median samples/s over the timed epochs (the issue's measure), and beside it the ratio",
            "of the median *fastest timed epoch* of each process: other jobs on this shared machine only ever",
            "slow an epoch down, so the fastest epochs are the closest to each contender's own speed.", "",
            "| ratio | batch | median ratio | per-rep range | target | met | fastest-epoch ratio | per-rep range | met |",
            "|---|---:|---:|---:|---:|:-:|---:|---:|:-:|"]
    for r in ratios:
        sign = "≥" if r["kind"] == "speed" else "≤"
        if r.get("value") is None:
            out.append(f"| {r['text']} | {r['bs']} | n/a | | {sign} {r['target']} | ? | | | |")
            continue

        def cells(prefix: str) -> list[str]:
            """(value, per-rep range, met) of the plain ratio (prefix "") or the fastest-epoch one."""
            if r.get(f"{prefix}value") is None:
                return ["", "", ""]
            lo, hi = r[f"{prefix}lo"], r[f"{prefix}hi"]
            return [f"**{r[prefix + 'value']:.2f}**", f"{lo:.2f}–{hi:.2f}" if lo is not None else "",
                    "yes" if r[f"{prefix}ok"] else "**no**"]

        plain, fastest = cells(""), cells("fastest_")
        out.append("| " + " | ".join([r["text"], str(r["bs"]), plain[0], plain[1], f"{sign} {r['target']}", plain[2],
                                      *fastest]) + " |")
    out.append("")
    for bs, rows in table.items():
        out += [f"## Batch size {bs}", "",
                "| contender | samples/s (median) | min | max | vs hand_tuned | fastest epoch, samples/s (median) "
                "| vs hand_tuned | process wall s | import s | peak RSS MiB | val acc % | runs |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ref = rows.get("hand_tuned", {}).get("median")
        ref_fastest = rows.get("hand_tuned", {}).get("fastest")
        for lab in order:
            row = rows[lab]
            if not row.get("n"):
                out.append(f"| {lab} | {row.get('note', '')} | | | | | | | | | | 0 |")
                continue
            rel = f"{row['median'] / ref:.2f}" if ref else ""
            rel_fastest = f"{row['fastest'] / ref_fastest:.2f}" if ref_fastest else ""
            failed = f" ({row['errors']} failed)" if row["errors"] else ""
            out.append(f"| {lab} | {row['median']:,.0f} | {row['min']:,.0f} | {row['max']:,.0f} | {rel} | "
                       f"{row['fastest']:,.0f} | {rel_fastest} | "
                       f"{row['wall']:.1f} | {row['imp']:.2f} | {row['rss']:.0f} | {row['acc']:.2f} | "
                       f"{row['n']}{failed} |")
        meds = {lab: row["acc"] for lab, row in rows.items() if row.get("n")}
        accs = [a for row in rows.values() for a in row.get("acc_all", [])]
        if meds:
            spread = max(meds.values()) - min(meds.values())
            out += ["", f"Accuracy check (median per contender): {min(meds.values()):.2f}–{max(meds.values()):.2f}% "
                        f"(spread {spread:.2f} points): "
                        f"{'OK, within 0.5' if spread <= 0.5 else '**more than 0.5 points apart**'}; "
                        f"single runs range {min(accs):.2f}–{max(accs):.2f}% (data order and init differ per run)."]
        out.append("")
    out += ["## Startup (median wall time)", "", "| command | seconds |", "|---|---:|"]
    for text, value in start.items():
        out.append(f"| `{text}` | {value:.3f} |" if isinstance(value, float) else f"| `{text}` | {value} |")
    help_s, tw_s, torch_s = (start.get(k) for k in ("trainwell --help", "python -c 'import trainwell'",
                                                    "python -c 'import torch'"))
    if all(isinstance(v, float) for v in (help_s, tw_s, torch_s)):
        out += ["", f"- `trainwell --help` < 0.3 s: {'yes' if help_s < 0.3 else '**no**'} ({help_s:.3f} s)",
                f"- `import trainwell` ≤ `import torch` + 0.2 s: {'yes' if tw_s <= torch_s + 0.2 else '**no**'} "
                f"({tw_s:.3f} s vs {torch_s:.3f} s)"]
    out += ["", "## Notes", "", NOTES, "", "## Contenders", ""]
    for path in sorted((BENCH / "contenders").glob("[!_]*.py")):
        doc = path.read_text().split('"""')[1].strip().splitlines()
        out.append(f"- `{path.stem}`: {' '.join(line.strip() for line in doc)}")
    return "\n".join(out) + "\n"


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
