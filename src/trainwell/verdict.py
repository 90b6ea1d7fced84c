"""The health verdict: what went wrong in a run (or that nothing did), in plain words.

Read from the run's ``metrics.jsonl`` alone, so it works for a finished run, a
crashed one and a run still going. Seed 000's "What to watch for" table is the
start: training loss stuck or rising, NaN/inf or very high loss, test accuracy far
below train. Each finding carries its evidence (the numbers) and a next step.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Loss trend. Below 1% relative improvement over the whole run the loss is "not
# decreasing"; below 5% it is "barely moving" (typical of a learning rate 10-1000x too low).
NOT_DECREASING = 0.01
BARELY_MOVING = 0.05
MIN_TREND_POINTS = 3  # fewer epochs than this say nothing about a trend
MIN_TREND_STEPS = 10  # single-batch losses are noisy: a trend from steps needs more of them
# The start and end of the trend are medians over the first and last fifth of the logged
# losses (at most this many points each), so one noisy batch does not decide it.
TREND_WINDOW = 10
# Update size: healthy training changes each weight tensor by ~1e-3 of its norm per step
# (a common rule of thumb); a median ratio below 1e-5 means the steps are far too small.
LOW_UPDATE_RATIO = 1e-5
# Explosion: a finite loss this many times its starting value.
EXPLOSION_FACTOR = 10.0
# Spike: a logged step loss this many times the median of the previous SPIKE_WINDOW
# logged losses, and at least SPIKE_MIN_SHARE of the starting loss (so noise on a
# near-zero loss, 0.001 -> 0.01, is not a spike).
SPIKE_FACTOR = 5.0
SPIKE_WINDOW = 10
SPIKE_MIN_SHARE = 0.25
SPIKES_FOR_LR = 2  # one spike can be a bad batch; two or more point at the step size
# Early rise: within the first third of the run the loss climbs this far above its start.
EARLY_RISE_FACTOR = 1.5
# Oscillation: at least half the epoch-to-epoch changes of the training loss are rises of >5%.
OSCILLATION_RISE = 0.05
OSCILLATION_SHARE = 0.5
# Overfitting: the same margin as plotting.py's warning (last validation loss 10% above its
# best), or train accuracy this far above validation accuracy at the end.
OVERFIT_MARGIN = 1.10
OVERFIT_ACC_GAP = 0.15
# Underfitting: the loss has plateaued (<2% better over the last half of the epochs)
# while accuracy is below 70%, or, without accuracy, while the loss has not even halved.
PLATEAU = 0.02
UNDERFIT_ACC = 0.70
UNDERFIT_LOSS_SHARE = 0.5
MIN_EPOCHS_FOR_PLATEAU = 4
# Gradients: a layer whose typical gradient norm is below 1e-5 of the largest layer's
# learns ~100,000x slower than the rest (vanishing); above 1e3 a single step moves
# weights far out of range (exploding).
VANISHING_RATIO = 1e-5
EXPLODING_NORM = 1e3
# Data loading: above 30% of step time waiting for the next batch the accelerator idles
# for a third of the run; faster loading buys more than any model change.
DATA_WAIT_SHARE = 0.3
# ... unless the run waited less than this in all: in a run of 10 ms epochs one preemption on a
# busy machine is a third of an epoch, and the share says nothing about the loader.
MIN_DATA_WAIT_S = 0.25

Severity = Literal["ok", "warning", "problem"]


@dataclass(frozen=True)
class Finding:
    """One health finding: a short code, how bad it is, and what to do about it."""

    code: str
    severity: Severity
    title: str
    evidence: str
    suggestion: str


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl`` (or of that file given directly).

    A line that is not valid JSON (the last one, cut short by a crash) is skipped;
    a record without ``kind`` is an old-style step record and gets ``kind: "step"``.
    A missing file gives ``[]``.
    """
    path = Path(run_dir)
    path = path / "metrics.jsonl" if path.is_dir() else path
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            record.setdefault("kind", "step")
            records.append(record)
    return records


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of one kind; a record without ``kind`` counts as a step record."""
    return [r for r in records if r.get("kind", "step") == kind]


def diagnose(records: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[Finding]:
    """Every finding the records support, worst first; one "ok" finding when the run is healthy."""
    if not records:
        return [Finding("no_data", "warning", "Nothing was recorded", "metrics.jsonl is missing or empty.",
                        "Train with a run directory (--run-dir) so trainwell can log metrics.")]
    run = _Run(records, config or {})
    checks = (_loss_exploding, _not_decreasing, _lr_too_high, _lr_too_low, _overfitting, _underfitting,
              _gradients, _data_loading, _interventions)
    findings = [f for check in checks for f in check(run)]
    if not findings:
        findings.append(_healthy(run))
    order = {"problem": 0, "warning": 1, "ok": 2}
    return sorted(findings, key=lambda f: order[f.severity])


def format_verdict(findings: list[Finding]) -> str:
    """Plain text, one paragraph per finding, headed by a one-line summary."""
    counts = Counter(f.severity for f in findings)
    if not counts["problem"] and not counts["warning"]:
        head = "Health verdict: healthy."
    else:
        parts = [f"{counts[s]} {s}{'s' if counts[s] > 1 else ''}" for s in ("problem", "warning") if counts[s]]
        head = f"Health verdict: {', '.join(parts)}."
    paragraphs = [head] + [
        f"{f.severity.upper()}: {f.title}.\n  Evidence: {f.evidence}\n  Next step: {f.suggestion}" for f in findings
    ]
    return "\n\n".join(paragraphs)


class _Run:
    """The series the checks share, extracted once from the records."""

    def __init__(self, records: list[dict[str, Any]], config: dict[str, Any]):
        self.config = config
        self.epochs = of_kind(records, "epoch")
        self.steps = [r for r in of_kind(records, "step") if _number(r.get("loss"))]
        self.layers = of_kind(records, "layers")
        self.interventions = of_kind(records, "intervention")
        # (step, loss, lr) per logged step; epoch means stand in when steps are too sparse.
        step_points = [(r.get("step", 0), float(r["loss"]), r.get("lr")) for r in self.steps]
        epoch_points = [(r.get("step", 0), float(r["train_loss"]), r.get("lr")) for r in self.epochs
                        if _number(r.get("train_loss"))]
        self.points = step_points if len(step_points) >= MIN_TREND_POINTS else epoch_points or step_points
        # The trend compares epoch means when there are enough (same data each time: no batch noise).
        finite_epochs = [p for p in epoch_points if math.isfinite(p[1])]
        self.trend = finite_epochs if len(finite_epochs) >= MIN_TREND_POINTS else None
        self.finite = [p for p in self.points if math.isfinite(p[1])]
        self.nonfinite_steps = [p for p in step_points if not math.isfinite(p[1])]
        self.nonfinite_epochs = [r.get("epoch") for r in self.epochs if not _finite(r.get("train_loss", 0.0))]
        self.guard_nonfinite = [r for r in self.interventions if "non-finite" in str(r.get("cause", ""))]
        # How many times the run went non-finite: the guard's count when it ran (a skipped NaN
        # batch may still leave its epoch mean NaN), else the logged steps', else the epochs'.
        self.nonfinite_events = (len(self.guard_nonfinite) or len(self.nonfinite_steps)
                                 or len(self.nonfinite_epochs))
        self.guard_spikes = [r for r in self.interventions if "spike" in str(r.get("cause", ""))]

    def lr(self) -> Any:
        """The learning rate to name: the configured one (the user's knob, before any back-off
        or schedule), else the first one logged."""
        if _number(self.config.get("lr")):
            return self.config["lr"]
        return next((lr for _, _, lr in self.points if lr is not None), None)

    def ends(self) -> tuple[float, float] | None:
        """The training loss at the start and at the end of the run: the first and last epoch
        means, else medians over the first and last few logged steps."""
        points = self.trend or self.finite
        if len(points) < (MIN_TREND_POINTS if self.trend else MIN_TREND_STEPS):
            return None
        k = 1 if self.trend else max(1, min(TREND_WINDOW, len(points) // 5))
        return (statistics.median(p[1] for p in points[:k]), statistics.median(p[1] for p in points[-k:]))

    def span(self) -> str:
        """Where the trend was measured: "epochs 1 to 8" or "steps 50 to 400"."""
        if self.trend:
            return f"{len(self.trend)} epochs"
        return f"steps {self.finite[0][0]} to {self.finite[-1][0]}"

    def update_ratio(self) -> float | None:
        """Median update/weight ratio over every logged layer, or None when not recorded."""
        ratios = [s["update_ratio"] for r in self.layers for s in (r.get("layers") or {}).values()
                  if isinstance(s, dict) and _finite(s.get("update_ratio"))]
        return statistics.median(ratios) if ratios else None

    def change(self) -> float | None:
        """Relative improvement of the training loss from the start to the end of the run."""
        ends = self.ends()
        return None if ends is None or ends[0] == 0 else (ends[0] - ends[1]) / abs(ends[0])

    def early_rise(self) -> tuple[int, float, float] | None:
        """(step, start, high): the loss at the start and its highest level early in the run.

        Many single-batch losses are noisy, so then both are medians: of the first sixth of
        the logged losses and of the second sixth.
        """
        points = self.finite
        if len(points) < MIN_TREND_POINTS:
            return None
        if len(points) < MIN_TREND_STEPS:
            step, high, _ = max(points[: max(2, len(points) // 3)], key=lambda p: p[1])
            return step, points[0][1], high
        k = max(3, len(points) // 6)  # a median of 3+ values ignores one odd batch
        return (points[2 * k - 1][0], statistics.median(p[1] for p in points[:k]),
                statistics.median(p[1] for p in points[k : 2 * k]))

    def spikes(self) -> list[tuple[int, float, float]]:
        """(step, loss, recent median) for each logged loss far above its recent median."""
        found = []
        for i in range(1, len(self.finite)):
            recent = statistics.median(p[1] for p in self.finite[max(0, i - SPIKE_WINDOW) : i])
            step, loss, _ = self.finite[i]
            if loss > SPIKE_FACTOR * recent and loss > SPIKE_MIN_SHARE * self.finite[0][1]:
                found.append((step, loss, recent))
        return found

    def explosion(self) -> tuple[int, float] | None:
        """(step, loss) where the loss peaked, if that is EXPLOSION_FACTOR x its start."""
        if len(self.finite) < 2:
            return None
        step, peak, _ = max(self.finite[1:], key=lambda p: p[1])
        return (step, peak) if peak > EXPLOSION_FACTOR * self.finite[0][1] > 0 else None

    def eval_losses(self) -> list[tuple[int, float, float | None]]:
        """(epoch, eval_loss, train_loss) for epochs with a finite validation loss."""
        return [(r["epoch"], float(r["eval_loss"]), r.get("train_loss")) for r in self.epochs
                if _finite(r.get("eval_loss"))]


def _loss_exploding(run: _Run) -> list[Finding]:
    evidence = []
    if run.nonfinite_steps:
        evidence.append(f"the logged step loss was NaN or infinite {len(run.nonfinite_steps)} time(s), "
                        f"first at step {run.nonfinite_steps[0][0]}")
    if run.nonfinite_epochs:
        evidence.append(f"the mean training loss was NaN or infinite in epoch "
                        f"{', '.join(str(e) for e in run.nonfinite_epochs[:5])}")
    if run.guard_nonfinite:
        steps = ", ".join(str(r.get("step")) for r in run.guard_nonfinite[:5])
        evidence.append(f"the health guard caught {len(run.guard_nonfinite)} non-finite loss or gradient "
                        f"value(s) (step {steps}{', ...' if len(run.guard_nonfinite) > 5 else ''})")
    if (peak := run.explosion()) is not None:
        evidence.append(f"the loss rose to {_n(peak[1])} at step {peak[0]}, "
                        f"{peak[1] / run.finite[0][1]:.0f}x its starting value {_n(run.finite[0][1])}")
    if not evidence:
        return []
    ended_finite = bool(run.points) and math.isfinite(run.points[-1][1])
    recovered = " The run recovered: its last logged loss is finite." if ended_finite and run.interventions else ""
    return [Finding(
        "loss_exploding", "problem", "The loss exploded or became NaN",
        _sentence("; ".join(evidence)) + "." + recovered,
        "Lower the learning rate (try 10x lower), clip gradients (--clip 1.0), add warmup, and check the "
        "inputs and labels for NaN or extreme values; with --precision 16 try bf16.",
    )]


def _not_decreasing(run: _Run) -> list[Finding]:
    change = run.change()
    if change is None or change >= NOT_DECREASING:
        return []
    start, end = run.ends()
    direction = "rose" if change < 0 else "barely changed"
    return [Finding(
        "not_decreasing", "problem", "Training loss is not decreasing",
        f"It {direction}: {_n(start)} at the start, {_n(end)} at the end ({-change:+.1%} over {run.span()}).",
        "Check that the labels match the inputs and the loss is connected to the model; then tune the "
        "learning rate — a stuck loss usually means it is far too low, a rising one too high.",
    )]


def _lr_too_high(run: _Run) -> list[Finding]:
    signs = []
    spikes = run.spikes()
    if len(spikes) + len(run.guard_spikes) >= SPIKES_FOR_LR:
        worst = f" (up to {max(s[1] / s[2] for s in spikes):.0f}x the recent median)" if spikes else ""
        signs.append(f"{len(spikes) + len(run.guard_spikes)} loss spikes{worst}"
                     + (f", {len(run.guard_spikes)} caught by the health guard" if run.guard_spikes else ""))
    if (peak := run.explosion()) is not None:
        signs.append(f"the loss grew {peak[1] / run.finite[0][1]:.0f}x")
    if run.nonfinite_events >= 2:
        signs.append(f"the loss or gradients went non-finite {run.nonfinite_events} times")
    if (rise := run.early_rise()) is not None and rise[2] > EARLY_RISE_FACTOR * rise[1] > 0:
        signs.append(f"early in the run the loss climbed from {_n(rise[1])} to {_n(rise[2])}")
    losses = [r["train_loss"] for r in run.epochs if _finite(r.get("train_loss"))]
    rises = sum(b > a * (1 + OSCILLATION_RISE) for a, b in zip(losses, losses[1:]))
    if len(losses) >= MIN_TREND_POINTS and rises >= OSCILLATION_SHARE * (len(losses) - 1):
        signs.append(f"the epoch training loss went up in {rises} of {len(losses) - 1} epochs")
    if not signs:
        return []
    lr = run.lr()
    name = f"The learning rate ({_n(lr)})" if lr is not None else "The learning rate"
    lower = f"try {_n(lr / 10)}" if _number(lr) else "try 10x lower"
    severe = peak is not None or run.nonfinite_events >= 2 or bool(run.guard_spikes)
    return [Finding(
        "lr_too_high", "problem" if severe else "warning", f"{name} is probably too high",
        _sentence("; ".join(signs)) + ".",
        f"Lower the learning rate ({lower}), add warmup (--warmup 500) or gradient clipping (--clip 1.0).",
    )]


def _lr_too_low(run: _Run) -> list[Finding]:
    change = run.change()
    if change is None or not -NOT_DECREASING < change < BARELY_MOVING:
        return []  # moving well, or rising (too high, not too low)
    if run.spikes() or run.explosion() or run.nonfinite_events or run.interventions:
        return []  # an unstable loss is not a slow one
    ratio = run.update_ratio()
    if ratio is not None and ratio >= LOW_UPDATE_RATIO:
        return []  # the steps are a normal size: a plateau (capacity, data), not a slow learner
    lr = run.lr()
    name = f"The learning rate ({_n(lr)})" if lr is not None else "The learning rate"
    higher = f"try {_n(lr * 10)}" if _number(lr) else "try 10x higher"
    start, end = run.ends()
    updates = (f"; each step changed the weights by a median {_n(ratio)} of their size (about 1e-3 is "
               "typical)" if ratio is not None else "")
    return [Finding(
        "lr_too_low", "warning", f"{name} is probably too low",
        f"The training loss barely moved: {_n(start)} -> {_n(end)} ({-change:+.2%} over {run.span()}){updates}.",
        f"Raise the learning rate ({higher}).",
    )]


def _overfitting(run: _Run) -> list[Finding]:
    evals = run.eval_losses()
    if len(evals) >= 2:
        best = min(evals, key=lambda e: e[1])
        last = evals[-1]
        train_fell = best[2] is not None and last[2] is not None and last[2] < best[2]
        if last[0] > best[0] and last[1] > OVERFIT_MARGIN * best[1] and train_fell:
            return [Finding(
                "overfitting", "warning", f"Overfitting began at epoch {best[0] + 1}",
                f"Validation loss rose from {_n(best[1])} at epoch {best[0]} (its best) to {_n(last[1])} at "
                f"epoch {last[0]} ({last[1] / best[1] - 1:+.0%}) while training loss fell from {_n(best[2])} "
                f"to {_n(last[2])}.",
                f"Use the best weights (model-best.safetensors, epoch {best[0]}); stop earlier (--patience 3); "
                "add data, augmentation or weight decay (--weight-decay 1e-4), or use a smaller model.",
            )]
    final = run.epochs[-1] if run.epochs else {}
    train_acc, eval_acc = final.get("train_acc"), final.get("eval_acc")
    if train_acc is not None and eval_acc is not None and train_acc - eval_acc > OVERFIT_ACC_GAP:
        return [Finding(
            "overfitting", "warning", "The model does much better on training data than on validation data",
            f"At epoch {final.get('epoch')} training accuracy is {train_acc:.1%} but validation accuracy is "
            f"{eval_acc:.1%} (a {train_acc - eval_acc:.1%} gap).",
            "Add data, augmentation, dropout or weight decay (--weight-decay 1e-4), or use a smaller model.",
        )]
    return []


def _underfitting(run: _Run) -> list[Finding]:
    losses = [(r.get("epoch"), r["train_loss"], r.get("train_acc"), r.get("eval_loss"), r.get("eval_acc"))
              for r in run.epochs if _finite(r.get("train_loss"))]
    if len(losses) < MIN_EPOCHS_FOR_PLATEAU or losses[0][1] <= 0:
        return []
    half = losses[len(losses) // 2]
    last = losses[-1]
    if half[1] <= 0 or (half[1] - last[1]) / half[1] >= PLATEAU:
        return []  # still improving: not a plateau yet
    acc = last[2]
    high = acc < UNDERFIT_ACC if acc is not None else last[1] > UNDERFIT_LOSS_SHARE * losses[0][1]
    if not high:
        return []
    scores = f"training accuracy {acc:.1%}" if acc is not None else f"training loss {_n(last[1])}"
    if last[4] is not None:
        scores += f", validation accuracy {last[4]:.1%}"
    elif last[3] is not None:
        scores += f", validation loss {_n(last[3])}"
    return [Finding(
        "underfitting", "warning", "The model is underfitting",
        f"The training loss has plateaued ({_n(half[1])} at epoch {half[0]}, {_n(last[1])} at epoch "
        f"{last[0]}) with {scores}: training and validation both stay poor.",
        "Use a bigger model (wider or deeper), train longer, reduce regularisation (weight decay, dropout), "
        "or check the features carry the signal.",
    )]


def _gradients(run: _Run) -> list[Finding]:
    norms: dict[str, list[float]] = {}
    for record in run.layers:
        for name, stats in (record.get("layers") or {}).items():
            value = stats.get("grad_norm") if isinstance(stats, dict) else None
            if _finite(value):
                norms.setdefault(name, []).append(float(value))
    findings = []
    if norms:
        typical = {name: statistics.median(values) for name, values in norms.items()}
        largest_name = max(typical, key=typical.get)
        largest = typical[largest_name]
        exploding = largest > EXPLODING_NORM  # then "small next to the largest" means nothing
        vanishing = [n for n, v in typical.items() if not exploding and v < VANISHING_RATIO * largest]
        if vanishing:
            findings.append(Finding(
                "vanishing_gradients", "warning", f"Vanishing gradients in {_names(vanishing)}",
                "Typical gradient norm " + ", ".join(f"{n} {_n(typical[n])}" for n in vanishing[:5])
                + f", against {_n(largest)} in {largest_name} (below {VANISHING_RATIO:g} of the largest).",
                "Use ReLU/GELU instead of sigmoid/tanh, add normalisation (BatchNorm/LayerNorm) or residual "
                "connections, and check the initialisation (Kaiming/Xavier).",
            ))
        peaks = {n: max(v) for n, v in norms.items() if max(v) > EXPLODING_NORM}
        if peaks:
            findings.append(Finding(
                "exploding_gradients", "problem", f"Exploding gradients in {_names(list(peaks))}",
                "Peak gradient norm " + ", ".join(f"{n} {_n(v)}" for n, v in list(peaks.items())[:5])
                + f" (above {EXPLODING_NORM:g}).",
                "Clip gradients (--clip 1.0), lower the learning rate, and add normalisation or a better "
                "initialisation in those layers.",
            ))
        return findings
    norms_logged = [(r.get("step"), r.get("grad_norm_max", r.get("grad_norm"))) for r in run.epochs + run.steps]
    big = [(s, v) for s, v in norms_logged if _finite(v) and v > EXPLODING_NORM]
    if big:
        step, value = max(big, key=lambda p: p[1])
        findings.append(Finding(
            "exploding_gradients", "problem", "Exploding gradients",
            f"The global gradient norm reached {_n(value)} (step {step}; above {EXPLODING_NORM:g}); "
            "per-layer norms were not recorded.",
            "Clip gradients (--clip 1.0), lower the learning rate, and add normalisation.",
        ))
    return findings


def _data_loading(run: _Run) -> list[Finding]:
    shares = [(r.get("epoch"), r["data_wait_share"]) for r in run.epochs
              if _finite(r.get("data_wait_share"))]
    if not shares:
        shares = [(r.get("epoch"), r["data_wait_share"]) for r in run.steps
                  if _finite(r.get("data_wait_share"))]
    if not shares:
        return []
    mean = sum(s for _, s in shares) / len(shares)
    timed = [r["data_wait_share"] * r["epoch_time"] for r in run.epochs
             if _finite(r.get("data_wait_share")) and _finite(r.get("epoch_time"))]
    if mean <= DATA_WAIT_SHARE or (timed and sum(timed) < MIN_DATA_WAIT_S):
        return []
    worst = max(shares, key=lambda s: s[1])
    return [Finding(
        "data_loading", "warning", "Data loading is the bottleneck",
        f"On average {mean:.0%} of each step was spent waiting for the next batch "
        f"(worst: epoch {worst[0]}, {worst[1]:.0%}); above {DATA_WAIT_SHARE:.0%} the model sits idle.",
        "Use DataLoader(num_workers=4, pin_memory=True, persistent_workers=True), move slow preprocessing "
        "out of __getitem__ (do it once, ahead of time), or hold the data in memory with tw.InMemoryLoader.",
    )]


def _interventions(run: _Run) -> list[Finding]:
    if not run.interventions:
        return []
    causes = Counter(re.sub(r"\s*\(.*\)$", "", str(r.get("cause", "unknown"))) for r in run.interventions)
    actions = Counter(str(r.get("action", "unknown")) for r in run.interventions)
    steps = [r.get("step") for r in run.interventions]
    lr_after = run.interventions[-1].get("lr_after")
    n = len(run.interventions)
    evidence = (f"Causes: {', '.join(f'{c} ({k})' for c, k in causes.most_common())}. "
                f"Actions: {', '.join(f'{a} ({k})' for a, k in actions.most_common(3))}. "
                f"First at step {steps[0]}, last at step {steps[-1]}")
    evidence += f"; learning rate afterwards {_n(lr_after)}." if lr_after is not None else "."
    return [Finding(
        "interventions", "warning", f"The health guard intervened {n} time{'s' if n > 1 else ''}",
        evidence,
        "Look at the steps listed (a bad batch? a learning rate too high?); if it keeps happening, "
        "lower the learning rate or clip gradients.",
    )]


def _healthy(run: _Run) -> Finding:
    parts = []
    if (ends := run.ends()) is not None:
        parts.append(f"training loss fell from {_n(ends[0])} to {_n(ends[1])} over {run.span()}")
    elif len(run.finite) >= 2:
        parts.append(f"training loss fell from {_n(run.finite[0][1])} to {_n(run.finite[-1][1])}")
    elif run.finite:
        parts.append(f"training loss {_n(run.finite[-1][1])} (too few points to judge a trend)")
    if evals := run.eval_losses():
        best = min(evals, key=lambda e: e[1])
        parts.append(f"validation loss is at its best at epoch {best[0]} ({_n(best[1])}) of {evals[-1][0]}")
    parts.append("no NaN, spikes or health-guard interventions")
    return Finding("healthy", "ok", "The run looks healthy", _sentence("; ".join(parts)) + ".",
                   "Nothing to fix. To go further: train longer or try a larger model while validation keeps improving.")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _n(value: Any) -> str:
    """A number in a few significant digits (1e-07, 0.6931, 1234)."""
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
