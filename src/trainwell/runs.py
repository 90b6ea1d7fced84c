"""Run directories as data: load one, list the runs under ``runs/``, compare several side by side.

Everything is read from the files a run leaves (``config.yaml``, ``summary.json``,
``metrics.jsonl``), so a crashed or still-running run lists too, marked as such.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from trainwell.errors import ConfigError
from trainwell.verdict import of_kind, read_records

RUNNING_WINDOW_S = 300  # metrics.jsonl written this recently, with no end record: still running
HIDDEN_CONFIG_KEYS = ("run_dir",)  # differs between every pair of runs by construction
RUN_FILES = ("metrics.jsonl", "config.yaml", "summary.json")  # a directory with none of these is not a run


@dataclass
class Run:
    """One run directory's files, parsed; every part may be missing."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return of_kind(self.records, "epoch")

    def last(self, kind: str) -> dict[str, Any]:
        """The last record of ``kind``, or ``{}``."""
        found = of_kind(self.records, kind)
        return found[-1] if found else {}

    @property
    def recipe(self) -> str:
        """What the run trained: its recipe, else the model's class name (a run written from Python),
        else "-"."""
        return str(self.config.get("recipe") or self.summary.get("recipe") or self.config.get("model")
                   or self.summary.get("model") or "-")

    @property
    def title(self) -> str:
        """The report's heading: the recipe or model, else the directory's name."""
        return self.name if self.recipe == "-" else self.recipe

    @property
    def health(self) -> str:
        """The worst health severity ("ok", "warning", "problem"): summary.json's "health" findings
        when the run wrote them, else the verdict on its records."""
        findings = self.summary.get("health")
        if isinstance(findings, list) and findings:
            severities = {f.get("severity") for f in findings if isinstance(f, dict)}
            return next((s for s in ("problem", "warning", "ok") if s in severities), "?")
        from trainwell.verdict import diagnose, worst_severity

        return worst_severity(diagnose(self.records, self.config))

    @property
    def status(self) -> str:
        """The summary's or end record's status; else "running" (written recently) or "incomplete"."""
        status = self.summary.get("status") or self.last("end").get("status")
        if status:
            return str(status)
        log = self.path / "metrics.jsonl"
        if log.exists() and time.time() - log.stat().st_mtime < RUNNING_WINDOW_S:
            return "running"
        return "incomplete"

    @property
    def date(self) -> str:
        """When the run started: the start record's time, else the oldest file's modification time."""
        stamp = self.last("start").get("time")
        if stamp:
            try:
                return datetime.fromisoformat(str(stamp)).strftime("%Y-%m-%d %H:%M")
            except ValueError:
                return str(stamp)
        times = [p.stat().st_mtime for p in (self.path / "config.yaml", self.path / "metrics.jsonl") if p.exists()]
        return datetime.fromtimestamp(min(times)).strftime("%Y-%m-%d %H:%M") if times else "?"

    @property
    def num_epochs(self) -> int:
        return int(self.summary.get("epochs") or self.last("end").get("epochs")
                   or max((r.get("epoch", 0) for r in self.epochs), default=0))

    @property
    def num_steps(self) -> int:
        return int(self.summary.get("steps") or self.last("end").get("steps")
                   or max((r.get("step", 0) for r in self.records), default=0))

    def best(self) -> dict[str, Any]:
        """The epoch record with the lowest finite validation loss, or ``{}``."""
        scored = [r for r in self.epochs if _finite(r.get("eval_loss"))]
        return min(scored, key=lambda r: r["eval_loss"]) if scored else {}

    def test(self) -> dict[str, Any]:
        """``test_loss``, ``test_acc``, ``test_samples`` and a recipe's other test metrics (MAE, R², NDCG)
        from the test record or summary.json."""
        source = self.last("test") or self.summary
        return {k: v for k, v in source.items() if k.startswith("test_")}

    def wall_time(self) -> float | None:
        value = self.summary.get("wall_time_s") or self.last("end").get("wall_time_s")
        if value is None and self.epochs:
            value = sum(r.get("epoch_time", 0.0) for r in self.epochs)
        return value

    def throughput(self) -> float | None:
        """Training samples per second over the run: all epochs' samples over all their time
        (a mean of per-epoch rates would weigh a short epoch like a long one)."""
        timed = [r for r in self.epochs if _finite(r.get("samples_per_sec")) and _finite(r.get("epoch_time"))
                 and r["epoch_time"] > 0]
        if timed:
            return sum(r["samples_per_sec"] * r["epoch_time"] for r in timed) / sum(r["epoch_time"] for r in timed)
        rates = [r["samples_per_sec"] for r in self.epochs if _finite(r.get("samples_per_sec"))]
        return sum(rates) / len(rates) if rates else None


def load_run(run_dir: str | Path) -> Run:
    """Parse a run directory; missing or unreadable files leave their part empty.

    Raises ConfigError (exit 2 on the command line) when ``run_dir`` is missing or holds none
    of a run's files.
    """
    import yaml

    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"no run directory at {path}; `trainwell runs list` shows the runs under ./runs")
    if not is_run_dir(path):
        raise ConfigError(f"{path} is not a run directory (no {', '.join(RUN_FILES[:-1])} or {RUN_FILES[-1]}); "
                          "`trainwell runs list` shows the runs under ./runs")
    run = Run(path, records=read_records(path))
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
        run.config = config if isinstance(config, dict) else {}
    except (OSError, yaml.YAMLError):
        pass
    try:
        summary = json.loads((path / "summary.json").read_text())
        run.summary = summary if isinstance(summary, dict) else {}
    except (OSError, ValueError):
        pass
    return run


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds any of the files a run writes."""
    return any((path / name).is_file() for name in RUN_FILES)


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """One row per run directory under ``root`` (oldest first): name, recipe, date, epochs,
    best validation metrics, test metrics, status and worst health severity."""
    root = Path(root)
    if not root.is_dir():
        return []
    rows = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        if not is_run_dir(path):
            continue
        run = load_run(path)
        best, test = run.best(), run.test()
        rows.append({
            "name": run.name, "path": str(path), "recipe": run.recipe, "date": run.date,
            "epochs": run.num_epochs, "best_epoch": best.get("epoch"), "best_val_loss": best.get("eval_loss"),
            "best_val_acc": best.get("eval_acc"), "test_loss": test.get("test_loss"),
            "test_acc": test.get("test_acc"), "status": run.status, "health": run.health,
        })
    return sorted(rows, key=lambda r: (r["date"], r["name"]))


def format_runs_table(rows: list[dict[str, Any]]) -> str:
    """The rows of ``list_runs`` as an aligned plain-text table."""
    if not rows:
        return "No runs found."
    header = ["RUN", "RECIPE", "DATE", "EPOCHS", "BEST VALIDATION", "TEST", "HEALTH", "STATUS"]
    body = [[r["name"], r["recipe"], r["date"], str(r["epochs"]),
             _metric(r["best_val_acc"], r["best_val_loss"], r["best_epoch"]),
             _metric(r["test_acc"], r["test_loss"]), r["health"], r["status"]] for r in rows]
    return text_table(header, body)


def comparison(run_dirs: list[str | Path]) -> tuple[list[Run], list[list[str]], list[list[str]]]:
    """The runs, their results rows and their config-difference rows (field, value per run)."""
    runs = [load_run(d) for d in run_dirs]
    results = [
        ["recipe / model"] + [r.recipe for r in runs],
        ["status"] + [r.status for r in runs],
        ["epochs"] + [str(r.num_epochs) for r in runs],
        ["best validation"] + [_metric(b.get("eval_acc"), b.get("eval_loss"), b.get("epoch"))
                               for b in (r.best() for r in runs)],
        ["test"] + [_metric(t.get("test_acc"), t.get("test_loss")) for t in (r.test() for r in runs)],
        ["wall time"] + [_seconds(r.wall_time()) for r in runs],
        ["samples/s"] + [f"{t:,.0f}" if t else "-" for t in (r.throughput() for r in runs)],
    ]
    keys = [k for r in runs for k in r.config if k not in HIDDEN_CONFIG_KEYS]
    keys = list(dict.fromkeys(keys))
    differences = [[k] + [_value(r.config.get(k, "-")) for r in runs] for k in keys
                   if len({json.dumps(r.config.get(k), default=str) for r in runs}) > 1]
    return runs, results, differences


def format_compare_table(run_dirs: list[str | Path]) -> str:
    """Results and config differences of ``run_dirs``, one column per run, as plain text."""
    runs, results, differences = comparison(run_dirs)
    header = [""] + [r.name for r in runs]
    text = "Results\n" + text_table(header, results)
    if differences:
        return text + "\n\nConfig differences\n" + text_table(header, differences)
    return text + "\n\nConfig differences: none (same resolved config)."


def compare_runs(run_dirs: list[str | Path], out_path: str | Path) -> Path:
    """Write one self-contained HTML page overlaying the runs' curves, with results and config differences."""
    from trainwell import report
    from trainwell.plotting import overlay_svg

    runs, results, differences = comparison(run_dirs)
    header = [""] + [r.name for r in runs]
    curves = overlay_svg(runs) or "<p class='note'>Not recorded: none of these runs finished an epoch.</p>"
    body = [f"<h1>Comparing {len(runs)} runs</h1>",
            f"<p class='sub'>{html.escape(', '.join(str(r.path) for r in runs))}</p>",
            "<h2>Learning curves</h2>", curves,
            "<h2>Results</h2>", report.html_table(header, results),
            "<h2>Config differences</h2>",
            report.html_table(header, differences) if differences else "<p>None: the resolved configs are the same.</p>"]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.page("trainwell: run comparison", "\n".join(body)), encoding="utf-8")
    return out


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _metric(acc: Any, loss: Any, epoch: Any = None) -> str:
    """``acc 97.10%`` (or ``loss 0.1234``), with ``(epoch N)`` when given; ``-`` when unknown."""
    if _finite(acc):
        text = f"acc {acc:.2%}"
    elif isinstance(loss, (int, float)):
        text = f"loss {loss:.4g}"
    else:
        return "-"
    return f"{text} (epoch {epoch})" if epoch is not None else text


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f} min"


def _value(value: Any) -> str:
    return "-" if value is None else str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
