"""``report.html``: one self-contained page per run that opens offline, with no server.

Plots are matplotlib SVG inlined in the page (text kept as text, ``svg.fonttype: none``),
styles sit in one ``<style>`` tag, and there is no JavaScript: the file can be mailed,
archived or opened from a laptop with no network. Every section degrades to a short
"not recorded" note when the run did not log what it needs.
"""

from __future__ import annotations

import html
import math
import tempfile
from pathlib import Path
from typing import Any

from trainwell.plotting import figure_svg, inline_svg, new_figure
from trainwell.report_memory import memory_section
from trainwell.runs import Run, load_run
from trainwell.verdict import DATA_WAIT_SHARE, Finding, diagnose, of_kind

MAX_POINTS = 2000  # per plotted line: keeps a long run's report small
MAX_HEATMAP_COLUMNS = 300  # per-layer records shown in the gradient-flow heatmap
LOG_SCALE_SPAN = 20  # a series spanning more than this factor is drawn on a log axis
EPOCH_ROWS = 10  # a longer epoch table shows its first and last rows, the rest folded away
# Whole-set metrics some recipes log beside the loss (trainwell.setmetrics) as eval_<name> / test_<name>.
SET_METRICS = {"mae": "MAE", "r2": "R²", "pairwise_acc": "pairwise accuracy", "ndcg10": "NDCG@10"}
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 24px; color: #1d232b; background: #fff; line-height: 1.45; }
h1 { margin-bottom: 0; } h2 { margin-top: 2em; border-bottom: 1px solid #d8dee4; padding-bottom: 4px; }
.sub { color: #57606a; margin-top: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 16px; }
.card { border: 1px solid #d8dee4; border-radius: 8px; padding: 10px 16px; min-width: 140px; }
.card .v { font-size: 1.5em; font-weight: 600; } .card .k { color: #57606a; font-size: 0.9em; }
.finding { border-left: 6px solid; border-radius: 4px; padding: 8px 14px; margin: 10px 0; background: #f6f8fa; }
.finding.ok { border-color: #2da44e; } .finding.warning { border-color: #d4a72c; }
.finding.problem { border-color: #cf222e; } .finding h3 { margin: 0 0 4px 0; font-size: 1.05em; }
.finding p { margin: 4px 0; }
.badge { font-size: 0.8em; text-transform: uppercase; letter-spacing: 0.05em; margin-right: 6px; }
.warn { color: #cf222e; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d8dee4; padding: 4px 10px; text-align: left; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
svg { max-width: 100%; height: auto; display: block; }
.note { color: #57606a; font-style: italic; }
details summary { cursor: pointer; color: #0969da; margin: 6px 0; }
"""


def write_report(run_dir: str | Path) -> Path:
    """(Re)build ``run_dir/report.html`` from the run's files; returns its path."""
    run = load_run(run_dir)
    out = run.path / "report.html"
    out.write_text(render(run), encoding="utf-8")
    return out


def render(run: Run) -> str:
    """The whole report page for ``run``."""
    findings = diagnose(run.records, run.config)
    sections = [
        ("Health verdict", _verdict_html(findings)),
        ("Learning curves", _learning_curves(run)),
        ("Loss, learning rate and gradient norm over the steps", _steps(run, _cited_spikes(run, findings))),
        ("Gradient flow per layer", _layer_flow(run)),
        ("Throughput and data loading", _throughput(run)),
        ("Memory", memory_section(run)),
        ("Health-guard interventions", _interventions(run)),
        ("Epochs", _epoch_table(run)),
        ("Final test metrics", _test_table(run)),
        ("Resolved config", html_table(["key", "value"], [[k, v] for k, v in run.config.items()])
         if run.config else _note("Not recorded: config.yaml was not found.")),
    ]
    body = [f"<h1>{_e(run.title)} run: {_e(run.status)}</h1>",
            f"<p class='sub'>{_e(run.date)} &middot; {_e(str(run.path))}</p>", _headline(run)]
    body += [f"<section><h2>{_e(title)}</h2>\n{content}</section>" for title, content in sections]
    return page(f"trainwell report: {run.title} ({run.name})", "\n".join(body))


def page(title: str, body: str) -> str:
    """A complete HTML document: inline CSS, no scripts, nothing fetched."""
    return (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
            f"<p class='note'>Written by trainwell; this file is self-contained and works offline.</p>\n"
            f"</body>\n</html>\n")


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    """An escaped HTML table; numbers are right-aligned and shown to 4 significant digits."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(f"<td class='num'>{_e(_fmt(c))}</td>" if isinstance(c, (int, float)) and not isinstance(c, bool)
                        else f"<td>{_e(_fmt(c))}</td>" for c in row)
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


# ---------------------------------------------------------------- sections


def _headline(run: Run) -> str:
    test, best, start = run.test(), run.best(), run.last("start")
    cards = []
    if "test_acc" in test:
        cards.append(("test accuracy", f"{test['test_acc']:.2%}"))
    if "test_loss" in test:
        cards.append(("test loss", f"{test['test_loss']:.4g}"))
    if best:
        text = f"{best['eval_acc']:.2%}" if "eval_acc" in best else f"{best['eval_loss']:.4g}"
        cards.append((f"best validation (epoch {best['epoch']})", text))
    cards.append(("epochs / steps", f"{run.num_epochs} / {run.num_steps}"))
    if (wall := run.wall_time()) is not None:
        cards.append(("wall time", f"{wall:.1f} s" if wall < 120 else f"{wall / 60:.1f} min"))
    if (rate := run.throughput()) is not None:
        cards.append(("throughput", f"{rate:,.0f} samples/s"))
    if "num_params" in start:
        cards.append(("parameters", f"{start['num_params']:,}"))
    if "device" in start:
        cards.append(("device / precision", f"{start['device']} / {start.get('precision', '?')}"))
    return "<div class='cards'>" + "".join(
        f"<div class='card'><div class='v'>{_e(v)}</div><div class='k'>{_e(k)}</div></div>" for k, v in cards
    ) + "</div>"


def _verdict_html(findings: list[Finding]) -> str:
    return "\n".join(
        f"<div class='finding {_e(f.severity)}'><h3><span class='badge'>{_e(f.severity)}</span>{_e(f.title)}</h3>"
        f"<p>{_e(f.evidence)}</p><p><b>Next step:</b> {_e(f.suggestion)}</p></div>" for f in findings
    )


def _learning_curves(run: Run) -> str:
    """Seed 004's plot, drawn by ``plot_learning_curves`` itself so the two never differ."""
    from trainwell.plotting import plot_learning_curves

    epochs = [e for e in run.epochs if "train_loss" in e]
    if not epochs:
        return _note("Not recorded: no epoch has finished, so there are no learning curves yet.")
    history = {k: [e[k] for e in epochs] for k in ("train_loss", "eval_loss", "train_acc", "eval_acc")
               if all(k in e for e in epochs)}
    import matplotlib

    with tempfile.TemporaryDirectory() as tmp, matplotlib.rc_context({"svg.hashsalt": "curves"}):
        result = plot_learning_curves(history, Path(tmp) / "curves.svg")
        svg = Path(tmp, "curves.svg").read_text(encoding="utf-8")
    svg = inline_svg(svg)
    if result["best_epoch"] is None:
        return svg + _note("No validation loss recorded: no best epoch to mark.")
    return svg + f"<p>Best epoch (lowest validation loss): {result['best_epoch']}.</p>"


def _cited_spikes(run: Run, findings: list[Finding]) -> list[tuple[float, float]]:
    """(step, loss) of the logged loss spikes, when the verdict cites spikes (its lr_too_high
    finding); the spikes the guard caught are drawn as interventions already."""
    if not any(f.code == "lr_too_high" and "spike" in f.evidence for f in findings):
        return []
    from trainwell.verdict_run import Run as VerdictRun

    return [(step, loss) for step, loss, _ in VerdictRun(run.records, run.config).spikes()]


def _steps(run: Run, spikes: list[tuple[float, float]]) -> str:
    # Step records where logged; an epoch record's values are epoch means (loss) or the
    # epoch's starting value (lr), so they only stand in when no step was logged.
    steps = [r for r in of_kind(run.records, "step") if _finite(r.get("step"))]
    loss = _series(steps, "loss") or _series(run.epochs, "train_loss")
    lr = _series(steps, "lr") or _series(run.epochs, "lr")
    grad = _series(steps, "grad_norm")
    grad_max = [(r["step"], r["grad_norm_max"]) for r in run.epochs if _finite(r.get("grad_norm_max"))]
    if not (loss or lr or grad or grad_max):
        return _note("Not recorded: no step or epoch records yet.")
    interventions = [r["step"] for r in of_kind(run.records, "intervention") if "step" in r]
    fig = new_figure(13, 3.6)
    axes = fig.subplots(1, 3)
    panels = ((axes[0], "Training loss", [(loss, "loss", "-")], True),
              (axes[1], "Learning rate", [(lr, "lr", "-")], False),
              (axes[2], "Gradient norm (before clipping)", [(grad, "logged step", "-"), (grad_max, "epoch max", ":")],
               True))
    if spikes:
        axes[0].plot(*zip(*spikes), "o", color="red", markerfacecolor="none", markersize=9,
                     label=f"loss spike ({len(spikes)}, cited in the verdict)")
    for ax, title, series, log in panels:
        for data, label, style in series:
            if data:
                ax.plot(*zip(*_thin(data)), style, label=label, marker="o" if len(data) < 20 else None)
        values = [v for data, _, _ in series for _, v in data if v > 0]
        if log and values and max(values) > LOG_SCALE_SPAN * min(values):
            ax.set_yscale("log")
        elif not log:
            ax.set_ylim(bottom=0)  # a constant learning rate reads as constant, not as noise
        for i, step in enumerate(interventions):
            ax.axvline(step, color="red", alpha=0.5, linewidth=1, label="intervention" if i == 0 else None)
        ax.set(title=title, xlabel="optimizer step")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0] and (len(series) > 1 or interventions or (spikes and ax is axes[0])):
            ax.legend(fontsize=8)
    caption = "" if grad else _note("Per-step gradient norms were not recorded; the epoch maxima are shown where available.")
    return figure_svg(fig, "steps") + caption


def _layer_flow(run: Run) -> str:
    import numpy as np
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

    records = [r for r in of_kind(run.records, "layers") if isinstance(r.get("layers"), dict) and r["layers"]]
    if not records:
        return _note("Not recorded: this run logged no per-layer gradient norms.")
    names = list(dict.fromkeys(n for r in records for n in r["layers"]))
    if len(records) > MAX_HEATMAP_COLUMNS:
        records = [records[int(i)] for i in np.linspace(0, len(records) - 1, MAX_HEATMAP_COLUMNS)]
    grid = np.full((len(names), len(records)), np.nan)
    for j, record in enumerate(records):
        for i, name in enumerate(names):
            value = (record["layers"].get(name) or {}).get("grad_norm")
            if _finite(value) and value > 0:
                grid[i, j] = math.log10(value)
    last = records[-1]["layers"]
    ratios = [(n, last[n]["update_ratio"]) for n in names if _finite((last.get(n) or {}).get("update_ratio"))
              and last[n]["update_ratio"] > 0]
    fig = new_figure(13, 1.2 + 0.28 * len(names))
    axes = fig.subplots(1, 2, width_ratios=(3, 1.2)) if ratios else [fig.subplots()]
    steps = [r.get("step", j) for j, r in enumerate(records)]
    first, last_step = (steps[0], steps[-1]) if steps[-1] > steps[0] else (steps[0] - 0.5, steps[0] + 0.5)
    image = axes[0].imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis",
                           extent=(first, last_step, len(names) - 0.5, -0.5))
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].set(title="log10 gradient norm per layer", xlabel="optimizer step")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.colorbar(image, ax=axes[0], label="log10 grad norm")
    if ratios:
        axes[1].barh([n for n, _ in ratios], [v for _, v in ratios], color="C1")
        axes[1].set_xscale("log")
        # Powers of ten only: log-axis minor labels (2x10^-3, 3x10^-3, ...) overlap on a narrow panel.
        axes[1].xaxis.set_major_locator(LogLocator(base=10, numticks=4))
        axes[1].xaxis.set_minor_formatter(NullFormatter())
        axes[1].axvline(1e-3, color="green", linestyle="--", label="~1e-3 is typical")
        axes[1].invert_yaxis()
        axes[1].set(title=f"update / weight ratio at step {records[-1].get('step', '?')}")
        axes[1].tick_params(axis="y", labelsize=8)
        axes[1].legend(fontsize=8)
    return (figure_svg(fig, "layers") + "<p>Dark rows are layers whose gradients vanish; bright spikes are explosions. "
            "Gaps are steps where a layer's gradient was zero or not finite.</p>")


def _throughput(run: Run) -> str:
    epochs = [e for e in run.epochs if _finite(e.get("samples_per_sec"))]
    if not epochs:
        return _note("Not recorded: this run logged no throughput.")
    waits = [(e["epoch"], 100 * e["data_wait_share"]) for e in run.epochs if _finite(e.get("data_wait_share"))]
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(7, 3.4)
    ax = fig.subplots()
    ax.bar([e["epoch"] for e in epochs], [e["samples_per_sec"] for e in epochs], color="C0", alpha=0.8,
           label="samples/s")
    ax.set(title="Training throughput per epoch", xlabel="epoch", ylabel="samples / s")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="y", alpha=0.3)
    if waits:
        twin = ax.twinx()
        twin.plot(*zip(*waits), "-", marker="o" if len(waits) < 20 else None, color="C3",
                  label="data wait (% of step time)")
        twin.axhline(100 * DATA_WAIT_SHARE, color="C3", linestyle=":", alpha=0.6,
                     label=f"verdict's warning level ({DATA_WAIT_SHARE:.0%})")
        twin.set(ylabel="time waiting for data (%)", ylim=(0, 100))
        fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    note = "" if waits else _note("Data-wait share: not recorded for this run.")
    return figure_svg(fig, "throughput") + note


def _interventions(run: Run) -> str:
    records = of_kind(run.records, "intervention")
    if not records:
        if run.last("start").get("health_guard") is False:
            return "<p>None: the health guard was off for this run.</p>"
        return "<p>None were recorded: the health guard skipped, rolled back or stopped nothing.</p>"
    return html_table(["step", "epoch", "cause", "action", "learning rate after"],
                      [[r.get("step"), r.get("epoch"), r.get("cause"), r.get("action"), r.get("lr_after")]
                       for r in records])


def _epoch_table(run: Run) -> str:
    """Every epoch; a long run shows its first and last EPOCH_ROWS // 2 rows, the full table folded
    in a <details> element (plain HTML, no script) so the page stays a few screens tall."""
    if not run.epochs:
        return _note("Not recorded: no epoch has finished.")
    columns = [("epoch", "epoch"), ("train_loss", "train loss"), ("train_acc", "train acc"),
               ("eval_loss", "val loss"), ("eval_acc", "val acc"),
               *((f"eval_{k}", f"val {label}") for k, label in SET_METRICS.items()),
               ("lr", "lr"), ("epoch_time", "time (s)"),
               ("samples_per_sec", "samples/s"), ("best", "best")]
    columns = [(k, label) for k, label in columns if any(k in e for e in run.epochs)]
    header = [label for _, label in columns]
    rows = [[("yes" if e.get(k) else "") if k == "best" else _pct(k, e.get(k)) for k, _ in columns]
            for e in run.epochs]
    if len(rows) <= EPOCH_ROWS:
        return html_table(header, rows)
    half = EPOCH_ROWS // 2
    gap = [[f"... {len(rows) - 2 * half} more epochs ..."] + [""] * (len(header) - 1)]
    return (html_table(header, rows[:half] + gap + rows[-half:])
            + f"<details><summary>All {len(rows)} epochs</summary>{html_table(header, rows)}</details>")


def _test_table(run: Run) -> str:
    test = {**run.test(), **{k: v for k, v in run.last("test").items()
                           if k.startswith("test_") and k[5:] in SET_METRICS}}
    if not test:
        return _note("Not recorded: no test-set evaluation.")
    labels = {"test_loss": "loss", "test_acc": "accuracy", "test_samples": "samples",
              **{f"test_{k}": label for k, label in SET_METRICS.items()}}
    return html_table(["metric", "value"], [[labels[k], _pct(k, v)] for k, v in test.items()])


# ---------------------------------------------------------------- small helpers


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) for the records with a finite ``key``, in step order."""
    return sorted((r["step"], r[key]) for r in records if _finite(r.get("step")) and _finite(r.get(key)))


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most MAX_POINTS evenly spaced points, the last one always kept."""
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def _pct(key: str, value: Any) -> Any:
    return f"{value:.2%}" if key.endswith("_acc") and _finite(value) else value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"  # 46,712 samples/s, not 4.671e+04
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def _note(text: str) -> str:
    return f"<p class='note'>{_e(text)}</p>"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
