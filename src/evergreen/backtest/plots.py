"""The backtest plot: the judged metric per window for each policy, with its retrains marked."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

_COLOURS = {"never": "#9e9e9e", "periodic": "#1f77b4", "drift": "#d62728"}


def plot_backtest(summary: dict[str, Any], path: Path) -> None:
    """Write a PNG of the metric per window over time per policy; triangles mark retrains (filled when promoted).

    A window where the metric is undefined (e.g. ROC AUC of a window holding one class) is a gap in its line.
    """
    label = summary.get("metric_label") or summary.get("metric") or "metric"
    direction = (
        ""
        if summary.get("lower_is_better") is None
        else (" (lower is better)" if summary["lower_is_better"] else " (higher is better)")
    )
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=120)
    for name, run in summary["policies"].items():
        windows = run["windows"]
        when = [dt.datetime.fromisoformat(w["start"]) for w in windows]
        values = [math.nan if w["value"] is None else w["value"] for w in windows]
        colour = _COLOURS.get(name)
        overall = "n/a" if run["value"] is None else f"{run['value']:.4g}"
        legend = f"{name}: {label} {overall}, {run['retrains']} retrains"
        ax.plot(when, values, color=colour, label=legend, linewidth=1.6, marker="." if len(when) < 30 else None)
        for at, w, value in zip(when, windows, values, strict=True):
            if w["retrain"]:
                ax.scatter(
                    [at],
                    [value],
                    marker="^",
                    s=46,
                    color=colour,
                    facecolors=colour if w["promoted"] else "white",
                    zorder=3,
                )
    ax.set_ylabel(f"window {label}{direction}")
    ax.set_title(f"Backtest: {label} per window (▲ retrain; filled when the gate promoted it)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
