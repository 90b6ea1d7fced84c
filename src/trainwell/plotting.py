"""Learning-curve plots: train vs validation, the best epoch, and an overfitting warning; several
runs' curves overlaid; figures as inline SVG for the HTML pages.

Figures are built with `matplotlib.figure.Figure`, never pyplot, so plotting
works headless and leaves a user's chosen backend alone.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_FORMATS = (".png", ".svg", ".pdf")
_OVERFIT_MARGIN = 1.10  # last validation loss this far above its best counts as rising


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: str | Path) -> dict:
    """Plot loss (and accuracy, if recorded) per epoch to `path` (.png, .svg or .pdf).

    `history` holds per-epoch lists: `train_loss`, and optionally `eval_loss`,
    `train_acc`, `eval_acc` (fractions, drawn as %). Returns the saved path,
    the best epoch (lowest `eval_loss`, 1-based) and whether validation loss
    has been rising since then while training loss kept falling.
    """
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(f"unsupported plot format {path.suffix!r}; use one of {', '.join(_FORMATS)}")
    train_loss = _series(history, "train_loss")
    if train_loss is None:
        raise ValueError("history['train_loss'] is empty: nothing to plot")
    eval_loss = _series(history, "eval_loss", len(train_loss))
    accuracies = {
        label: acc
        for label, key in (("train", "train_acc"), ("validation", "eval_acc"))
        if (acc := _series(history, key, len(train_loss))) is not None
    }

    best = _best_epoch(eval_loss)
    overfitting = bool(
        best is not None
        and best < len(train_loss)
        and eval_loss[-1] > _OVERFIT_MARGIN * eval_loss[best - 1]
        and train_loss[-1] < train_loss[best - 1]
    )

    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(train_loss) + 1)
    style = {"marker": "o" if len(epochs) < 20 else None, "linewidth": 2}
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep SVG text searchable
        fig = Figure(figsize=(12 if accuracies else 7, 4.5), layout="constrained")
        axes = fig.subplots(1, 2 if accuracies else 1, squeeze=False)[0]
        loss_ax = axes[0]
        loss_ax.plot(epochs, train_loss, label="train", **style)
        if eval_loss is not None:
            loss_ax.plot(epochs, eval_loss, label="validation", **style)
        loss_ax.set(title="Loss", ylabel="loss")
        if accuracies:
            for label, acc in accuracies.items():
                axes[1].plot(epochs, 100 * acc, label=label, **style)
            axes[1].set(title="Accuracy", ylabel="accuracy (%)")
        for ax in axes:
            if best is not None:
                ax.axvline(best, color="green", linestyle="--", label=f"best epoch {best}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend()
        if overfitting:
            fig.suptitle(
                f"Warning: possible overfitting (validation loss rising since epoch {best})",
                color="red",
                fontweight="bold",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=path.suffix.lower()[1:], dpi=150)

    return {
        "path": str(path),
        "best_epoch": best,
        "overfitting": overfitting,
        "overfitting_since": best if overfitting else None,
    }


def _series(
    history: Mapping[str, Sequence[float]], key: str, length: int | None = None
) -> np.ndarray | None:
    """`history[key]` as a float array, or None when absent or empty; checks it spans every epoch."""
    values = history.get(key)
    if values is None or len(values) == 0:
        return None
    values = np.asarray(values, dtype=float)
    if length is not None and values.size != length:
        raise ValueError(f"history[{key!r}] has {values.size} epochs, train_loss has {length}")
    return values


def _best_epoch(eval_loss: np.ndarray | None) -> int | None:
    """1-based epoch of the lowest finite validation loss (the first, on ties)."""
    if eval_loss is None or not np.isfinite(eval_loss).any():
        return None
    return int(np.argmin(np.where(np.isfinite(eval_loss), eval_loss, np.inf))) + 1


def new_figure(width: float, height: float) -> Any:
    """A pyplot-free figure (headless, leaves the user's backend alone)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure_svg(fig: Any, salt: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prologue, DOCTYPE or metadata).

    ``salt`` keeps the SVG ids of each plot on a page distinct.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):  # text stays text
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return inline_svg(buffer.getvalue())


def inline_svg(svg: str) -> str:
    """An SVG file's text reduced to its ``<svg>`` element, ready to sit inside HTML."""
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)


def overlay_svg(runs: Sequence[Any]) -> str | None:
    """Loss and accuracy per epoch of several runs (objects with ``name`` and ``epochs`` records) on
    shared axes, as inline SVG; None when no run finished an epoch.

    Colour tells the runs apart and line style the split (train dashed with hollow markers,
    validation solid), both named in the legend, so the two never look alike.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    with_epochs = [r for r in runs if r.epochs]
    if not with_epochs:
        return None
    has_acc = any("train_acc" in e or "eval_acc" in e for r in with_epochs for e in r.epochs)
    fig = new_figure(12 if has_acc else 7, 4.5)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    splits = (("train", "--", "white", "train (dashed)"), ("eval", "-", None, "validation (solid)"))
    for i, run in enumerate(with_epochs):
        color = f"C{i % 10}"
        for key, style, face, _ in splits:
            for ax, metric, scale in ((axes[0], "loss", 1),) + (((axes[1], "acc", 100),) if has_acc else ()):
                points = [(e["epoch"], scale * e[f"{key}_{metric}"]) for e in run.epochs if f"{key}_{metric}" in e]
                if points:
                    ax.plot(*zip(*points), style, color=color, marker="o" if len(points) < 20 else None,
                            markerfacecolor=face or color)
    run_handles = [Line2D([], [], color=f"C{i % 10}", linewidth=4, label=run.name) for i, run in enumerate(with_epochs)]
    split_handles = [Line2D([], [], color="0.3", linestyle=style, marker="o", markerfacecolor=face or "0.3", label=label)
                     for _, style, face, label in splits]
    for ax, title in zip(axes, ("Loss", "Accuracy (%)")):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(True, alpha=0.3)
    # Below the plots, where it hides no curve: the runs by colour, then the splits by line style.
    handles = run_handles + split_handles
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8, handlelength=3.5)
    return figure_svg(fig, "overlay")
