"""What a study leaves in `tune/`: best.json, trials.csv, and Optuna's history and importance plots as PNG files
(matplotlib, no browser or network needed); and the lines `evergreen tune` prints."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna

from evergreen.tuning.study import StudySummary


def _plot(make, path: Path) -> Path | None:
    """Draw one of optuna.visualization.matplotlib's plots into `path`; None when the study cannot show it yet."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API notices, and "too few trials" for importances
        try:
            axes = make()
        except (ValueError, RuntimeError):  # e.g. importance needs two finished trials that vary a param
            plt.close("all")
            return None
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(9, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(study: optuna.Study, summary: StudySummary, folder: Path) -> dict[str, Path]:
    """best.json, trials.csv, history.png and (with enough finished trials) importance.png in `folder`."""
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    written = {"best": folder / "best.json", "trials": folder / "trials.csv"}
    written["best"].write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")
    study.trials_dataframe().to_csv(written["trials"], index=False)
    figures = {
        "history": lambda: plots.plot_optimization_history(study),
        "importance": lambda: plots.plot_param_importances(study),
    }
    for name, make in figures.items():
        path = _plot(make, folder / f"{name}.png")
        if path is not None:
            written[name] = path
    return written


def summary_lines(summary: StudySummary, written: dict[str, Path], shown) -> list[str]:
    """A few readable lines: the trials, the best against the params as they were, the files, the next step."""
    t = summary.trials
    lines = [
        f"study {summary.study!r} in {summary.storage}: {sum(t.values())} trials by {len(summary.workers)} "
        f"worker(s): {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed"
        + (f", {t['running']} running" if t["running"] else "")
    ]
    best, base = summary.best, summary.baseline
    if best is None:
        lines.append("no trial has completed yet")
    else:
        against = ""
        if base is not None and base.get("value") is not None:
            change = (best["value"] - base["value"]) / max(abs(base["value"]), 1e-12)
            against = f" against {base['value']:.4g} with the current params (trial {base['number']}, {change:+.1%})"
        lines.append(f"best: trial {best['number']}, valid {summary.metric} {best['value']:.4g}{against}")
        if best["params"]:
            lines.append("  " + " ".join(f"{k}={json.dumps(v)}" for k, v in best["params"].items()))
        else:
            lines.append("  the current params are the best found: nothing to apply")
    lines.append("files: " + ", ".join(shown(p) for p in written.values()))
    if best is not None and best["params"]:
        lines.append("next: `evergreen tune --apply` writes the best params into params.yaml, then `dvc repro`")
    return lines
