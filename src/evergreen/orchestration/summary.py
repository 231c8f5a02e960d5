"""Small pure helpers for the `evergreen run` command: parsing `-S key=value` and summarising a run; and the
closing summary every run ends with (`dvc repro`'s promote stage, `evergreen run`, `evergreen summary`,
`python3 dev.py run`): the leaderboard's top rows, what was promoted and why (or why not, and what to try
next), where the reports are, and the next command. Every line is under 100 characters."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from evergreen.artifacts.reports import EvalReport, ExportReport, PromotionReport
from evergreen.errors import ConfigError
from evergreen.model.metrics import best, metric
from evergreen.params_file import YAMLError, load_plain
from evergreen.workspace import Workspace

WIDTH = 99  # the closing summary's lines stay under 100 characters
TOP_ROWS = 5


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.lr=0.01", "split.seed=3"]` -> `{"train.lr": 0.01, "split.seed": 3}` (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. train.lr=0.01")
        try:
            overrides[key.strip()] = load_plain(value)  # YAML 1.2, as params.yaml and `dvc exp run -S` read it
        except YAMLError:
            raise ConfigError(f"--set {pair!r}: the value is not YAML (quote text, close brackets)") from None
    return overrides


def key_metrics(ws: Workspace) -> list[tuple[str, Any]]:
    """(label, value) of the metrics worth a line: data rows, the gated metric of the model and of the baseline
    the gate compares it with, ONNX parity."""
    found: list[tuple[str, Any]] = []
    if ws.data_metrics.exists():
        data = json.loads(ws.data_metrics.read_text())
        found += [(label, data.get(key)) for key, label in (("rows_out", "clean rows"),
                                                            ("rows_quarantined", "quarantined rows"))]  # fmt: skip
    evaluation = EvalReport.read_if_exists(ws.eval_metrics)
    if evaluation is not None:
        promote = ws.params.promote
        gated = metric(promote.metric_for(ws.params.data.task))
        found.append((f"model test {gated.label}", evaluation.model.get(gated.name)))
        picked = best(gated.name, evaluation.baseline_values(gated.name, promote.baseline))
        if picked is not None:  # the baseline the gate compares with: the best one, or the one declared
            found.append((f"{picked[0]} baseline test {gated.label}", picked[1]))
    export = ExportReport.read_if_exists(ws.export_metrics)
    if export is not None:
        found.append(("ONNX parity max abs diff", export.parity_max_abs_diff))
    return [(label, value) for label, value in found if value is not None]


def run_summary(outcome: dict[str, str], ws: Workspace) -> str:
    """A short human summary: which stages ran or were skipped, and the key metrics now on disk."""
    ran = [name for name, what in outcome.items() if what == "ran"]
    skipped = [name for name, what in outcome.items() if what == "skipped"]
    lines = [
        f"ran: {', '.join(ran) or 'nothing'}",
        f"up to date (skipped): {', '.join(skipped) or 'nothing'}",
    ]
    for label, value in key_metrics(ws):
        lines.append(f"{label}: {round(value, 4) if isinstance(value, float) else value}")
    return "\n".join(lines)


def _wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"  # 79,660 reads better than 7.966e+04


def leaderboard_lines(board: dict[str, Any], label: str) -> list[str]:
    """The leaderboard's top rows: family, valid, test, fit time; the chosen one marked with *."""
    lines = [f"Leaderboard ({label}, {board.get('direction', '')}; * chosen on valid, test only judges):"]
    lines.append(f"  {'family':<12}{'valid':>10}{'test':>10}{'time':>9}")
    for row in board.get("candidates", [])[:TOP_ROWS]:
        mark = "*" if row.get("chosen") else " "
        seconds = f"{row['seconds']:.0f} s" if row.get("seconds") is not None else "-"
        lines.append(f"{mark} {row['family']:<12}{_figure(row.get('valid')):>10}{_figure(row.get('test')):>10}"
                     f"{seconds:>9}")  # fmt: skip
    return lines


def _chosen_family(ws: Workspace) -> str:
    if ws.leaderboard.exists():
        rows = json.loads(ws.leaderboard.read_text()).get("candidates", [])
        return next((r["family"] for r in rows if r.get("chosen")), ws.params.model.type)
    return ws.params.model.type


def _promotion_lines(ws: Workspace, report: PromotionReport, evaluation: EvalReport | None) -> list[str]:
    """What was promoted and why, or why not and what to try next (never a dead end)."""
    reasons = "; ".join(report.reasons) or "no reason recorded"
    # candidates better on valid that the gate refused: before the one promoted, or besides the chosen one
    checks = sorted({r.split(":")[0] for p in report.passed_over for r in p.reasons})
    refused = f"{', '.join(p.family for p in report.passed_over)} (failed: {', '.join(checks)})"
    if report.promoted and report.passed_over:
        return _wrapped(
            f"Promoted: {report.version} is the champion: {report.family}, the best candidate on "
            f"valid that passed the gate. Refused first: {refused}; see metrics/promotion.json."
        )
    if report.promoted:
        return _wrapped(f"Promoted: {report.version} is the champion ({reasons}).")
    if report.shadow:
        return _wrapped(f"Passed the gate: {report.version} serves in the shadow of {report.champion_before} "
                        "until labelled records judge it (`evergreen shadow`).")  # fmt: skip
    lines = _wrapped(f"Not promoted: {reasons}.")
    if report.passed_over:
        lines += _wrapped(f"Nor the next candidates on valid: {refused}.")
    if report.champion_after is not None:
        return lines + _wrapped(f"Champion {report.champion_after} keeps serving.")
    gated = metric(ws.params.promote.metric_for(ws.params.data.task))
    tries = [] if ws.params.model.type == "auto" else ["-S model.type=auto (trees and networks compete)"]
    if evaluation is not None:
        model_value = evaluation.model.get(gated.name)
        picked = best(gated.name, evaluation.baseline_values(gated.name, ws.params.promote.baseline))
        if picked is not None and model_value is not None:
            ours, theirs = _figure(model_value), _figure(picked[1])
            lines += _wrapped(f"No champion yet: the best candidate {_chosen_family(ws)} scored {gated.label} "
                              f"{ours} on test against baseline {picked[0]} {theirs}.")  # fmt: skip
            gap = abs(model_value - picked[1]) / max(abs(picked[1]), 1e-12)
            if gap <= 0.02:  # a near miss on a small test split is often noise: say how to accept it, knowingly
                tries.append(
                    f"`evergreen run -S promote.baseline_margin={gap + 0.0005:.3f}` accepts it ({gap:.1%} behind)"
                )
    tries += ["a longer train.time_budget_s", "more rows or features"]
    return lines + _wrapped("Try: " + "; ".join(tries) + ". `evergreen serve` serves nothing yet.")


def closing_summary(ws: Workspace) -> str:
    """The few lines a run ends with, from the metrics files on disk (whatever has been written so far)."""
    lines: list[str] = []
    gated = metric(ws.params.promote.metric_for(ws.params.data.task))
    if ws.leaderboard.exists():
        lines += leaderboard_lines(json.loads(ws.leaderboard.read_text()), gated.label)
    evaluation = EvalReport.read_if_exists(ws.eval_metrics)
    if evaluation is not None:
        shown = ", ".join(f"{k} {_figure(v)}" for k, v in evaluation.baseline_values(gated.name).items())
        sample = evaluation.baselines_fit_on
        fit_on = f"; fitted on {sample['rows']:,} of {sample['of']:,} train rows" if sample else ""
        lines += _wrapped(f"Baselines on test ({gated.label}{fit_on}): {shown}")
    report = PromotionReport.read_if_exists(ws.promotion_metrics)
    if report is not None:
        lines += _promotion_lines(ws, report, evaluation)
    elif not lines:
        lines.append("Nothing has run here yet: `dvc repro` (or `evergreen run`) runs the pipeline.")
    lines.append(f"Reports: {ws.show(ws.metrics_dir)}/*.json, {ws.show(ws.eval_reports)}/ (`dvc plots show`), "
                 f"data checks {ws.show(ws.validation_reports)}/")  # fmt: skip
    champion = report.champion_after if report is not None else None
    if champion is not None:
        lines.append(f"Next: `evergreen serve` serves champion {champion}; `evergreen init TABLE` for your own.")
    else:
        lines.append("Next: `evergreen init TABLE` declares your own table (CSV or Parquet).")
    return "\n".join(line[:WIDTH] for line in lines)
