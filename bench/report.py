"""The benchmark's report: the runs' JSON lines summarised per contender, the acceptance ratios
of issue 5 (with the spread of the repetitions and a bootstrap interval), and the markdown
that ``bench/run.py`` writes."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

BENCH = Path(__file__).resolve().parent

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
- Samples/s counts the timed epochs only: the clock starts when the second epoch starts and stops in each
  framework's end-of-training callback (trainwell's `on_fit_end`, Lightning's and Hugging Face's
  `on_train_end`), after the last epoch's end-of-epoch work (trainwell's checkpoint, captured and handed
  to its writer thread; Lightning's checkpoint and logging). What follows that callback is outside the
  clock: trainwell's final weights, its wait for the last checkpoint's fsync and the closing of its logs
  (about 20 ms), like the other trainers' teardown. Import, data preparation, the warm-up epoch and the
  final validation are in the process wall time.
- The fastest-epoch figures take each process's quickest timed epoch. Work a trainer does every epoch
  (trainwell's and Lightning's epoch-end checkpoints, logging) is inside every epoch.
- Accuracy after 2 epochs depends on the seed and on float rounding: contenders with identical math give
  identical accuracy (seed_loop, ignite:default and lightning:default share torch's seed-0 init and all end at
  the same value), and switching Adam to its fused kernel alone moves the result by about 0.3 points. A spread
  a little above 0.5 points here is that chaos, not a contender doing less work: every contender runs the
  same number of samples, epochs, optimizer steps and the same end-of-run validation.
- With other jobs on the machine, a 2-thread torch process that loses a core spin-waits in OpenMP and slows
  down 10x or more; `--threads 1` keeps the comparison about the trainers rather than about the scheduler."""


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


def bootstrap_interval(pairs: list[tuple[float, float]], level: float = 0.9,
                       resamples: int = 2000) -> tuple[float, float] | None:
    """A ``level`` bootstrap interval of the ratio of medians, resampling whole repetitions (a pair:
    both contenders' values from one repetition), with a fixed seed so a report can be recomputed.

    On a shared machine one repetition's pair can be minutes apart from the next; the interval says
    how far the ratio could move had other repetitions been drawn. None with fewer than 3 pairs."""
    if len(pairs) < 3:
        return None
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(a for a, _ in sample) / statistics.median(b for _, b in sample)
        for sample in ([rng.choice(pairs) for _ in pairs] for _ in range(resamples))
    )
    tail = (1 - level) / 2
    return ratios[int(tail * resamples)], ratios[min(resamples - 1, int((1 - tail) * resamples))]


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
            paired = [(ra[field], rb[field]) for ra, rb in pairs]
            per_rep = [x / y for x, y in paired]
            value = a[key] / b[key]
            row.update({f"{prefix}value": value, f"{prefix}lo": min(per_rep) if per_rep else None,
                        f"{prefix}hi": max(per_rep) if per_rep else None,
                        f"{prefix}interval": bootstrap_interval(paired),
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
            "The 90% interval is a bootstrap over the repetitions (each resample draws whole repetitions, both",
            "contenders' runs of one together): where it straddles the target, this run cannot tell met from missed.", "",
            "| ratio | batch | median ratio | 90% interval | per-rep range | target | met "
            "| fastest-epoch ratio | 90% interval | per-rep range | met |",
            "|---|---:|---:|---:|---:|---:|:-:|---:|---:|---:|:-:|"]
    for r in ratios:
        sign = "≥" if r["kind"] == "speed" else "≤"
        if r.get("value") is None:
            out.append(f"| {r['text']} | {r['bs']} | n/a | | | {sign} {r['target']} | ? | | | | |")
            continue

        def cells(prefix: str) -> list[str]:
            """(value, interval, per-rep range, met) of the plain ratio (prefix "") or the fastest-epoch one."""
            if r.get(f"{prefix}value") is None:
                return ["", "", "", ""]
            lo, hi, interval = r[f"{prefix}lo"], r[f"{prefix}hi"], r[f"{prefix}interval"]
            return [f"**{r[prefix + 'value']:.2f}**", f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "",
                    f"{lo:.2f}–{hi:.2f}" if lo is not None else "", "yes" if r[f"{prefix}ok"] else "**no**"]

        plain, fastest = cells(""), cells("fastest_")
        out.append("| " + " | ".join([r["text"], str(r["bs"]), *plain[:3], f"{sign} {r['target']}", plain[3],
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
