"""The backtest plot: error per window for each policy, with its retrains marked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

_COLOURS = {"never": "#9e9e9e", "periodic": "#1f77b4", "drift": "#d62728"}


def plot_backtest(summary: dict[str, Any], path: Path) -> None:
    """Write a PNG of window RMSE over time per policy; triangles mark retrains (filled when promoted)."""
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=120)
    for name, run in summary["policies"].items():
        windows = run["windows"]
        when = [dt.datetime.fromisoformat(w["start"]) for w in windows]
        colour = _COLOURS.get(name)
        label = f"{name}: RMSE {run['rmse']:.1f}, {run['retrains']} retrains"
        ax.plot(when, [w["rmse"] for w in windows], color=colour, label=label, linewidth=1.6)
        for at, w in zip(when, windows, strict=True):
            if w["retrain"]:
                ax.scatter(
                    [at],
                    [w["rmse"]],
                    marker="^",
                    s=46,
                    color=colour,
                    facecolors=colour if w["promoted"] else "white",
                    zorder=3,
                )
    ax.set_ylabel("window RMSE")
    ax.set_title("Backtest: error per window (▲ retrain; filled when the gate promoted it)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
