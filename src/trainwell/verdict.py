"""The health verdict: what went wrong in a run (or that nothing did), in plain words.

Read from the run's ``metrics.jsonl`` alone, so it works for a finished run, a
crashed one and a run still going. Seed 000's "What to watch for" table is the
start: training loss stuck or rising, NaN/inf or very high loss, test accuracy far
below train. Each finding carries its evidence (the numbers) and a next step.

The run model (reading the records) is in ``trainwell.verdict_run``, the rules in
``trainwell.verdict_rules``; their calibration is docs/health-calibration.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from trainwell.verdict_rules import CHECKS, DATA_WAIT_SHARE
from trainwell.verdict_run import Finding, Run, Severity, finite, fmt, of_kind, read_records, sentence

__all__ = ["DATA_WAIT_SHARE", "Finding", "Severity", "diagnose", "findings_as_data", "format_verdict",
           "of_kind", "read_records", "worst_severity"]

# A named cause of a stuck loss makes "use a bigger model" the wrong advice.
CAUSES_OF_A_PLATEAU = ("lr_too_high", "lr_too_low")


def diagnose(records: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[Finding]:
    """Every finding the records support, worst first; one "ok" finding when the run is healthy."""
    if not records:
        return [Finding("no_data", "warning", "Nothing was recorded", "metrics.jsonl is missing or empty.",
                        "Train with a run directory (--run-dir) so trainwell can log metrics.")]
    run = Run(records, config or {})
    findings = [f for check in CHECKS for f in check(run)]
    if any(f.code in CAUSES_OF_A_PLATEAU for f in findings):
        findings = [f for f in findings if f.code != "underfitting"]
    if not findings:
        findings.append(_healthy(run))
    order = {"problem": 0, "warning": 1, "ok": 2}
    return sorted(findings, key=lambda f: order[f.severity])


def findings_as_data(findings: list[Finding]) -> list[dict[str, str]]:
    """The findings as plain dicts (``code``, ``severity``, ``title``, ``evidence``, ``suggestion``),
    for ``summary.json``'s ``"health"``."""
    return [asdict(f) for f in findings]


def worst_severity(findings: list[Finding]) -> Severity:
    """"problem", "warning" or "ok": the worst of the findings."""
    severities = {f.severity for f in findings}
    return next((s for s in ("problem", "warning") if s in severities), "ok")


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


def _healthy(run: Run) -> Finding:
    parts = []
    epochs = [(r.get("epoch"), r["train_loss"]) for r in run.epochs if finite(r.get("train_loss"))]
    if len(epochs) >= 2:  # epoch means: the whole set each time, no single-batch noise
        start, end = epochs[0][1], epochs[-1][1]
        parts.append(f"training loss {_moved(start, end)} from {fmt(start)} to {fmt(end)} over {len(epochs)} epochs")
    elif (ends := run.ends()) is not None:
        parts.append(f"training loss {_moved(*ends)} from {fmt(ends[0])} to {fmt(ends[1])} over {run.span()}")
    elif len(run.finite) >= 2:
        start, end = run.finite[0][1], run.finite[-1][1]
        parts.append(f"training loss {_moved(start, end)} from {fmt(start)} to {fmt(end)} (single batches)")
    elif run.finite:
        parts.append(f"training loss {fmt(run.finite[-1][1])} (too few points to judge a trend)")
    if evals := run.eval_losses():
        best = min(evals, key=lambda e: e[1])
        parts.append(f"validation loss is at its best at epoch {best[0]} ({fmt(best[1])}) of {evals[-1][0]}")
    if run.baseline is not None:
        parts.append(f"predicting the mean of the targets would give {fmt(run.baseline['loss'])}")
    parts.append("no NaN, spikes or health-guard interventions")
    return Finding("healthy", "ok", "The run looks healthy", sentence("; ".join(parts)) + ".",
                   "Nothing to fix. To go further: train longer or try a larger model while validation keeps improving.")


def _moved(start: float, end: float) -> str:
    """The verb for a change of the loss: never a rise called a fall."""
    return "fell" if end < start else "rose" if end > start else "stayed"
