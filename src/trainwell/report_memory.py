"""The report's memory section: the estimate by part beside the measured training peak (the
``memory`` record a ``MemoryProbe`` logs), how far apart they are, and the process's peak
memory per epoch as context (see docs/memory.md for what each number counts)."""

from __future__ import annotations

import html
import math
from typing import Any

from trainwell.plotting import figure_svg, new_figure
from trainwell.runs import Run

PARTS = ("parameters", "gradients", "optimizer_state")


def memory_section(run: Run) -> str:
    """Plots and sentences for the report's "Memory" section; a note when nothing was recorded."""
    probe = run.last("memory")
    estimate = probe.get("estimated") or run.last("start").get("memory") or {}
    parts = _stacked_parts(estimate)
    measured = probe.get("measured_peak") if _finite(probe.get("measured_peak")) else None
    process = [(e["epoch"], e["memory_bytes"] / 2**20) for e in run.epochs if _finite(e.get("memory_bytes"))]
    if not parts and measured is None and not process:
        return _note("Not recorded: this run logged no memory estimate or measurement.")
    on_cpu = run.last("start").get("device", "cpu") == "cpu"
    what = "peak process memory (RSS)" if on_cpu else "peak device memory"
    panels = int(bool(parts or measured is not None)) + int(bool(process))
    fig = new_figure(13 if panels == 2 else 7, 2.6)
    axes = list(fig.subplots(1, 2, width_ratios=(3, 2)) if panels == 2 else [fig.subplots()])
    if parts or measured is not None:
        _training_bars(axes.pop(0), parts, measured)
    if process:
        from matplotlib.ticker import MaxNLocator

        ax = axes.pop(0)
        ax.bar(*zip(*process), color="C7")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="MB", title=f"Measured {what} (context)")
    text = _sentences(estimate, parts, probe, measured)
    if process:
        text.append(f"Measured {what}: {max(m for _, m in process):,.1f} MB.")
        # The two measure different things; say so, or the gap reads as a bad estimate.
        text.append("That is the whole process: Python, torch's own libraries (a few hundred MB before any "
                    "model exists) and the data held in memory, so it is far above the training memory."
                    if on_cpu else "That counts every tensor torch allocated on the device, the data there "
                    "included; the CUDA context (a few hundred MB) comes on top.")
    return figure_svg(fig, "memory") + f"<p>{html.escape(' '.join(text))}</p>"


def _stacked_parts(estimate: dict) -> list[tuple[str, float]]:
    """The estimate's parts as they add up to its total: the activations and the optimizer step's
    temporaries never coexist (backward frees the one before the other), so only the larger counts."""
    parts = [(k.replace("_", " "), estimate[k]) for k in PARTS if _finite(estimate.get(k))]
    activations, step = estimate.get("activations"), estimate.get("optimizer_step")
    step = step if _finite(step) else 0
    if step > (activations if _finite(activations) else 0):
        parts.append(("optimizer step", step))
    elif _finite(activations):
        parts.append(("activations", activations))
    return parts


def _training_bars(ax: Any, parts: list[tuple[str, float]], measured: float | None) -> None:
    """The estimate's parts stacked on one bar, the measured training peak on the bar below."""
    largest = max(sum(size for _, size in parts), measured or 0)
    unit, scale = ("KB", 2**10) if largest < 2**20 else ("MB", 2**20)
    left = 0.0
    for i, (name, size) in enumerate(parts):
        ax.barh(1, size / scale, left=left, color=f"C{i}", label=f"{name} {size_text(size)}")
        left += size / scale
    if measured is not None:
        ax.barh(0, measured / scale, color="C7", label=f"measured training peak {size_text(measured)}")
    ax.set(yticks=[0, 1], yticklabels=["measured", "estimate"], xlabel=unit, ylim=(-0.6, 1.6),
           title="Training memory: estimate (before training) and measured peak")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncols=3)


def _sentences(estimate: dict, parts: list, probe: dict, measured: float | None) -> list[str]:
    text = []
    if _finite(estimate.get("total")):
        listed = ", ".join(f"{name} {size_text(size)}" for name, size in parts)
        text.append(f"Estimated training memory: {size_text(estimate['total'])} ({listed}; activations are what "
                    "autograd saves for one micro-batch's backward pass).")
        step, activations = estimate.get("optimizer_step"), estimate.get("activations")
        if _finite(step) and step > 0 and _finite(activations):
            text.append(f"The optimizer step's temporaries ({size_text(step)}) and the activations "
                        f"({size_text(activations)}) never coexist, so only the larger is counted.")
    if measured is None:
        text.append("Measured training peak: not recorded.")
        return text
    steps = probe.get("steps")
    text.append(f"Measured training peak: {size_text(measured)} over {steps} step{'s' if steps != 1 else ''} "
                f"(parameters, gradients and optimizer state alive, plus the most torch allocated during the steps; "
                f"{probe.get('method', 'method not recorded')}).")
    if _finite(estimate.get("total")) and measured > 0:
        gap = estimate["total"] / measured - 1
        side = "above" if gap > 0 else "below"
        text.append(f"The estimate is within {math.ceil(abs(gap) * 100):.0f}% of the measured training peak "
                    f"({side} it).")
    return text


def size_text(size: float) -> str:
    """Bytes in the unit that reads best: 620 B, 12.4 KB, 3.8 MB, 1.2 GB."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
