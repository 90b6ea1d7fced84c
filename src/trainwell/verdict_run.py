"""The verdict's run model: the records of ``metrics.jsonl`` read back, and the series the rules share.

``trainwell.verdict`` holds the rules and the words; this module only reads and measures.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

MIN_TREND_POINTS = 3  # fewer epochs than this say nothing about a trend
MIN_TREND_STEPS = 10  # single-batch losses are noisy: a trend from steps needs more of them
# The start and end of a trend from steps are medians over the first and last fifth of the logged
# losses (at most this many points each), so one noisy batch does not decide it.
TREND_WINDOW = 10
# Spike: a logged step loss this many times the median of the previous SPIKE_WINDOW logged losses.
SPIKE_FACTOR = 5.0
SPIKE_WINDOW = 10
# ... that matters to the run: one batch 13x a median of 0.017 late in a run is a hard example
# (the default mnist run, 97.9% test accuracy). A one-off spike counts only if it rises by the
# whole starting loss (the run thrown back to where it began); one that stayed up (the next
# logged loss too is SPIKE_FACTOR x the median) only if it rises by a quarter of it.
SPIKE_ONE_OFF_SHARE = 1.0
SPIKE_LASTING_SHARE = 0.25
# Explosion: a finite loss this many times its starting value.
EXPLOSION_FACTOR = 10.0

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


class Run:
    """The series the checks share, extracted once from the records."""

    def __init__(self, records: list[dict[str, Any]], config: dict[str, Any]):
        self.config = config
        self.epochs = of_kind(records, "epoch")
        self.steps = [r for r in of_kind(records, "step") if number(r.get("loss"))]
        self.layers = of_kind(records, "layers")
        # The guard's interventions; halving the micro-batch after an out-of-memory error is no health
        # problem (the update stays the same) and is reported on its own.
        everything = of_kind(records, "intervention")
        self.out_of_memory = [r for r in everything if str(r.get("cause", "")).startswith("out of memory")]
        self.interventions = [r for r in everything if r not in self.out_of_memory]
        baselines = [r for r in of_kind(records, "baseline") if finite(r.get("loss"))]
        self.baseline: dict[str, Any] | None = baselines[0] if baselines else None
        # A baseline of metrics instead of a loss (ranking: random order's pairwise accuracy, NDCG).
        scored = [r for r in of_kind(records, "baseline") if not finite(r.get("loss"))]
        self.metric_baseline: dict[str, Any] | None = scored[0] if scored else None
        # (step, loss, lr) per logged step; epoch means stand in when steps are too sparse.
        step_points = [(r.get("step", 0), float(r["loss"]), r.get("lr")) for r in self.steps]
        epoch_points = [(r.get("step", 0), float(r["train_loss"]), r.get("lr")) for r in self.epochs
                        if number(r.get("train_loss"))]
        self.points = step_points if len(step_points) >= MIN_TREND_POINTS else epoch_points or step_points
        # The trend compares epoch means when there are enough (same data each time: no batch noise).
        finite_epochs = [p for p in epoch_points if math.isfinite(p[1])]
        self.epoch_losses = finite_epochs
        self.trend = finite_epochs if len(finite_epochs) >= MIN_TREND_POINTS else None
        self.finite = [p for p in self.points if math.isfinite(p[1])]
        self.nonfinite_steps = [p for p in step_points if not math.isfinite(p[1])]
        self.nonfinite_epochs = [r.get("epoch") for r in self.epochs if not finite(r.get("train_loss", 0.0))]
        self.guard_nonfinite = [r for r in self.interventions if "non-finite" in str(r.get("cause", ""))]
        # How many times the run went non-finite: the guard's count when it ran (a skipped NaN
        # batch may still leave its epoch mean NaN), else the logged steps', else the epochs'.
        self.nonfinite_events = (len(self.guard_nonfinite) or len(self.nonfinite_steps)
                                 or len(self.nonfinite_epochs))
        self.guard_spikes = [r for r in self.interventions if "spike" in str(r.get("cause", ""))]
        # A NaN the guard skipped, after which the run went on finite, is an intervention, not an explosion.
        self.recovered = bool(self.interventions) and bool(self.points) and math.isfinite(self.points[-1][1])

    def lr(self) -> Any:
        """The learning rate to name: the configured one (the user's knob, before any back-off
        or schedule), else the first one logged."""
        if number(self.config.get("lr")):
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
        """Where the trend was measured: "8 epochs" or "steps 50 to 400"."""
        if self.trend:
            return f"{len(self.trend)} epochs"
        return f"steps {self.finite[0][0]} to {self.finite[-1][0]}"

    def update_ratio(self) -> float | None:
        """Median update/weight ratio over every logged layer, or None when not recorded."""
        ratios = [s["update_ratio"] for r in self.layers for s in (r.get("layers") or {}).values()
                  if isinstance(s, dict) and finite(s.get("update_ratio"))]
        return statistics.median(ratios) if ratios else None

    def change(self) -> float | None:
        """Relative improvement of the training loss from the start to the end of the run."""
        ends = self.ends()
        return None if ends is None or ends[0] == 0 else (ends[0] - ends[1]) / abs(ends[0])

    def start_scale(self) -> float:
        """The loss where training started: the larger of the first logged loss and the first
        epoch's mean (a fast learner's first logged batch is already far below its start)."""
        first = [self.finite[0][1]] if self.finite else []
        return max(first + [p[1] for p in self.epoch_losses[:1]], default=0.0)

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
        """(step, loss, recent median) for each logged loss far above its recent median, by a
        share of the starting loss that matters (see SPIKE_ONE_OFF_SHARE)."""
        found, scale = [], self.start_scale()
        for i in range(1, len(self.finite)):
            recent = statistics.median(p[1] for p in self.finite[max(0, i - SPIKE_WINDOW) : i])
            step, loss, _ = self.finite[i]
            if loss <= SPIKE_FACTOR * recent:
                continue
            stayed = i + 1 < len(self.finite) and self.finite[i + 1][1] > SPIKE_FACTOR * recent
            share = SPIKE_LASTING_SHARE if stayed else SPIKE_ONE_OFF_SHARE
            if loss - recent > share * scale:
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
                if finite(r.get("eval_loss"))]


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value: Any) -> bool:
    return number(value) and math.isfinite(value)


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def names(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def fmt(value: Any) -> str:
    """A number in a few significant digits (1e-07, 0.6931, 1234)."""
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
