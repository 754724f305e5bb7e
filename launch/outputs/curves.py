"""Plots: loss/accuracy curves, accuracy heat maps, the Aᵗ curve, grouped bar charts (matplotlib's Agg canvas; written atomically)."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ddjax.atomic import atomic_open
from ddjax.errors import ConfigError

__all__ = ["save_curves", "save_heatmap", "save_accuracy_curve", "save_bar_chart"]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of records holding a finite ``key`` (and a ``step``)."""
    steps, values = [], []
    for record in history:
        if "step" not in record or record.get(key) is None:
            continue
        try:
            v = float(record[key])
            st = float(record["step"])
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            steps.append(st)
            values.append(v)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def save_curves(path: str | os.PathLike, history: Sequence[Mapping[str, Any]], *, title: str | None = None) -> None:
    """Save a two-panel PNG: training loss vs step, and evaluation accuracy vs step.

    ``history`` is the list of ``metrics.jsonl`` records: each has ``"step"`` and optionally ``"loss"``,
    ``"synthetic_acc"`` (with optional ``"synthetic_acc_std"``, drawn as a band) and ``"random_real_acc"``
    (drawn as a horizontal dashed baseline at its latest value). Missing or non-finite values are skipped. The
    loss axis is logarithmic when every plotted loss is positive. Uses a private Agg canvas (no pyplot, no
    global backend change). Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2, sharex=True)  # the panels share the step range

    steps, loss = _series(history, "loss")
    if loss.size:
        ax_loss.plot(steps, loss, color="tab:blue", linewidth=1.2, marker="." if loss.size < 50 else None)
        if np.all(loss > 0):
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("distillation loss")
    ax_loss.grid(True, alpha=0.3)

    acc_steps, acc = _series(history, "synthetic_acc")
    plotted = False
    if acc.size:
        ax_acc.plot(acc_steps, acc, color="tab:orange", marker="o", linewidth=1.2, label="synthetic")
        std_steps, std = _series(history, "synthetic_acc_std")
        if std.size:
            # Align std to the accuracy points (records that hold both).
            lookup = dict(zip(std_steps.tolist(), std.tolist()))
            pts = [(s_, a, lookup[s_]) for s_, a in zip(acc_steps.tolist(), acc.tolist()) if s_ in lookup]
            if pts:
                xs, ys, ss = (np.asarray(v) for v in zip(*pts))
                ax_acc.fill_between(xs, ys - ss, ys + ss, color="tab:orange", alpha=0.2, linewidth=0)
        plotted = True
    _, real = _series(history, "random_real_acc")
    if real.size:
        ax_acc.axhline(real[-1], color="tab:gray", linestyle="--", linewidth=1.2,
                       label=f"random real ({real[-1]:.4g})")
        plotted = True
    if plotted:
        ax_acc.legend(loc="best", fontsize="small")
    else:
        ax_acc.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("evaluation")
    ax_acc.grid(True, alpha=0.3)

    if title:
        fig.suptitle(title)
    _save_png(fig, path)


def _save_png(fig: Any, path: str | os.PathLike) -> None:
    """Lay out and write ``fig`` as PNG, atomically."""
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def _figure(width: float, height: float):
    """A matplotlib Figure on a private Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_heatmap(path: str | os.PathLike, matrix: Any, column_labels: Sequence[str], row_labels: Sequence[str], *,
                 title: str | None = None) -> None:
    """PNG heat map of an accuracy matrix (rows: after each phase, columns: test domains), values written in the
    cells when the matrix is small enough to read them (<= 12 columns). Written atomically."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape != (len(row_labels), len(column_labels)):
        raise ConfigError(f"save_heatmap: matrix of shape {a.shape} does not match {len(row_labels)} row and "
                          f"{len(column_labels)} column labels")
    fig = _figure(max(4.0, 0.6 * a.shape[1] + 2.5), max(3.0, 0.45 * a.shape[0] + 1.5))
    ax = fig.subplots()
    image = ax.imshow(a, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="test accuracy")
    ax.set_xticks(range(a.shape[1]), [str(c) for c in column_labels], rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(a.shape[0]), [str(r) for r in row_labels], fontsize="small")
    ax.set_xlabel("test domain")
    if a.shape[1] <= 12:
        for (r, c), v in np.ndenumerate(a):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if v < 0.6 else "black")
    if title:
        ax.set_title(title, fontsize="medium")
    _save_png(fig, path)


def save_accuracy_curve(path: str | os.PathLike, values: Sequence[float], labels: Sequence[str], *,
                        title: str | None = None) -> None:
    """PNG of the average accuracy Aᵗ after each phase t (DIDD Fig. 5). Written atomically."""
    v = np.asarray(values, dtype=np.float64)
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    ax.plot(np.arange(1, len(v) + 1), v, marker="o", color="tab:orange")
    ax.set_xticks(np.arange(1, len(v) + 1), [str(x) for x in labels], rotation=60, ha="right", fontsize="small")
    ax.set_xlabel("after domain t")
    ax.set_ylabel("average accuracy $A^t$")
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    _save_png(fig, path)


def save_bar_chart(path: str | os.PathLike, labels: Sequence[str], series: Mapping[str, tuple[Sequence[float],
                   Sequence[float]]], *, ylabel: str = "test accuracy") -> None:
    """PNG of grouped bars: ``series`` maps a legend name to ``(means, stds)`` with one value per label (the stds
    drawn as error bars); y from 0 to 1. Written atomically."""
    n, width = len(labels), 0.8 / max(1, len(series))
    fig = _figure(max(4.0, 1.2 * n + 1.5), 3.6)
    ax = fig.subplots()
    for i, (name, (means, stds)) in enumerate(series.items()):
        if len(means) != n or len(stds) != n:
            raise ConfigError(f"save_bar_chart: series {name!r} has {len(means)} means and {len(stds)} stds for "
                              f"{n} labels")
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(np.arange(n) + offset, means, width, yerr=stds, label=name, capsize=3)
    ax.set_xticks(np.arange(n), [str(x) for x in labels], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7)
    _save_png(fig, path)
