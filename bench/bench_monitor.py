"""Benchmark the drift check of `evergreen monitor` (issues 6 and 12): time and peak memory per window size.

    python bench/bench_monitor.py                  # before and after, 10k, 100k and 1M rows; bench/results/
    python bench/bench_monitor.py --quick          # 10k and 100k only
    python bench/bench_monitor.py --paths after    # the current path only

Two paths of `compute_report`, in one run:
- `before`: `evidently_drift=True`, the decisions taken from Evidently's report (`DataDriftPreset`) on every row
  of the (sampled) window, as before issue 12;
- `after`: the default, each column's distance computed once with numpy (`evergreen.monitoring.drift`) on
  every row, Evidently's report run on a sample of at most `REPORT_ROWS` for the UI.
Each window is checked whole (`max_rows` = its rows) and, at 1M rows, also sampled to the configured
`monitor.max_rows` (100,000) with three seeds. The run fails (exit 1, after writing the results) unless, on
every window, both paths flag the same features with scores within `SCORE_TOLERANCE`.

Data: bike-like rows built from the bundled hour.csv (`data.source` in params.yaml), in the layouts monitoring
reads. The reference is 100,000 rows drawn with replacement from 2011 (`yr` = 0), with small noise on
temp/atemp/hum/windspeed (kept in [0, 1]) and a `prediction` column (the target with 15% noise), as the
registry's `reference.parquet` holds. A current window is shaped like `read_log`: the features plus request
metadata, no labels. Two kinds of window:
- `same`: drawn the same way from 2011 with another seed (no drift);
- `drifted`: drawn from 2012, the real year-over-year drift of this data (`yr`, demand, weather).

Each measurement runs in a fresh Python process, so its peak memory (VmHWM) is its own: interpreter,
imports (Evidently is heavy), the two frames and the check. Seconds are `compute_report` alone (building the
Evidently datasets, running the report, parsing it); writing the HTML and JSON is timed apart.

The 1M-row windows are checked twice: whole (`max_rows` above the window) and sampled to the configured
`monitor.max_rows` (100,000) with three seeds, and the per-feature drift decisions are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "monitor.json"
REFERENCE_ROWS = 100_000
# both paths compute the same distance on the same rows: they may differ only by floating-point rounding
SCORE_TOLERANCE = 1e-9
NOISY = ("temp", "atemp", "hum", "windspeed")


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------------- data
def _bike(rows: int, year: int, seed: int, data: Any) -> Any:
    """`rows` rows drawn with replacement from one year of the bundled data, with noise on the weather."""
    import numpy as np
    import polars as pl

    from evergreen.data.schema import polars_type

    raw = pl.read_csv(ROOT / data.source, infer_schema=False)  # the bundled file has padded cells ("0 ")
    typed = [
        pl.col(c.name).str.strip_chars().str.to_date(strict=False)
        if c.type == "date"
        else pl.col(c.name).str.strip_chars().cast(polars_type(c), strict=False)
        for c in data.columns
    ]
    source = raw.select(typed).drop_nulls([c.name for c in data.features] + ["cnt"])
    pool = source.filter(pl.col("yr") == year)
    rng = np.random.default_rng(seed)
    frame = pool[rng.integers(0, pool.height, rows)]
    noise = {c: (frame[c] + rng.normal(0, 0.02, rows)).clip(0, 1) for c in NOISY}
    prediction = frame["cnt"].cast(pl.Float64) * rng.normal(1, 0.15, rows)
    return frame.with_columns(**noise, prediction=prediction)


def _reference(data: Any) -> Any:
    import polars as pl

    from evergreen.data.schema import EVENT_TIME

    frame = _bike(REFERENCE_ROWS, 0, 1, data)
    return frame.with_columns(pl.col("dteday").cast(pl.Datetime("us")).alias(EVENT_TIME))


def _window(rows: int, kind: str, data: Any) -> Any:
    """A window shaped like `read_log`: request metadata, the features, prediction, no label yet."""
    import datetime as dt

    import polars as pl

    frame = _bike(rows, 1 if kind == "drifted" else 0, 2, data)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    features = [c.name for c in data.features]
    return frame.select(
        pl.format("r{}", pl.int_range(rows) // 10).alias("request_id"),
        (pl.int_range(rows) % 10).alias("row"),
        (pl.lit(start) + pl.duration(seconds=pl.int_range(rows))).alias("time"),
        pl.lit("v1").alias("model_version"),
        "instant",  # the id and the timestamp travel with a request when sent; not features
        "dteday",
        *features,
        "prediction",
        pl.lit(None, dtype=pl.String).alias("probabilities"),
        pl.lit(None, dtype=pl.Float64).alias("label"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("label_time"),
    )


# -------------------------------------------------------------------------------------------- one check
def child(rows: int, kind: str, max_rows: int, seeds: list[int], path: str) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from evergreen.config import load_params
    from evergreen.monitoring.evidently_adapter import compute_report, parse_drift
    from evergreen.monitoring.report_files import save_report

    params = load_params(ROOT / "params.yaml")
    config = params.monitor.model_copy(update={"max_rows": max_rows})
    reference, current = _reference(params.data), _window(rows, kind, params.data)
    rss_data = _peak_rss_mib()
    runs = []
    for seed in seeds:
        started, cpu = time.perf_counter(), time.process_time()
        summary, snapshot = compute_report(
            reference, current, params.data, config, champion="v1", seed=seed, evidently_drift=path == "before"
        )
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        shown = parse_drift(snapshot)  # what the report (the UI) shows: a sample's scores on the `after` path
        judged = [*summary.features, *([summary.prediction] if summary.prediction else [])]
        runs.append(
            {
                "seed": seed,
                "seconds": round(seconds, 3),
                "cpu_s": round(cpu_s, 3),  # all threads: steadier than seconds on a shared machine
                "drifted": summary.drifted_features,
                "scores": {f.column: f.score for f in summary.features},
                "prediction_score": summary.prediction.score if summary.prediction else None,
                "prediction_drifted": summary.prediction.drifted if summary.prediction else None,
                "report_rows": int(snapshot.report.metadata.get("report_rows", min(rows, max_rows))),
                "report_max_abs_difference": max(abs(shown[f.column].score - f.score) for f in judged),
            }
        )
    peak_check = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        save_report(snapshot, Path(tmp) / "r.html", Path(tmp) / "r.json")
        save_s = time.perf_counter() - started
        html_mb = (Path(tmp) / "r.html").stat().st_size / 1e6
    return {
        "path": path,
        "rows": rows,
        "kind": kind,
        "max_rows": max_rows,
        "sampled": rows > max_rows,
        "runs": runs,
        "peak_rss_mib_after_data": round(rss_data),
        "peak_rss_mib": round(peak_check),
        "save_s": round(save_s, 3),
        "html_mb": round(html_mb, 2),
    }


def _run_child(rows: int, kind: str, max_rows: int, seeds: list[int], path: str) -> dict[str, Any]:
    seeds_arg = ",".join(map(str, seeds))
    args = [sys.executable, __file__, "--child", str(rows), kind, str(max_rows), seeds_arg, path]
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result = json.loads(out.strip().splitlines()[-1])
    first = result["runs"][0]
    seconds = " / ".join(f"{run['seconds']:.2f} ({run['cpu_s']:.2f} CPU)" for run in result["runs"])
    print(
        f"{path:<6} {rows:>9,} {kind:<8} max_rows={max_rows:>9,}: {seconds} s, "
        f"peak {result['peak_rss_mib']:,} MiB, drifted {first['drifted']}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k windows only")
    parser.add_argument("--paths", nargs="+", choices=["before", "after"], default=["before", "after"])
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows, kind, max_rows, seeds, path = args.child
        result = child(int(rows), kind, int(max_rows), [int(s) for s in seeds.split(",")], path)
        print(json.dumps(result))
        return

    load_before = os.getloadavg()
    from evergreen.config import load_params

    monitor = load_params(ROOT / "params.yaml").monitor
    default_max = monitor.max_rows

    def threshold(column: str) -> float:
        return monitor.policy.feature_thresholds.get(column, monitor.policy.feature_threshold)

    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    results = []
    for rows in sizes:  # the two paths side by side, so that a change in the machine's load hits both
        for kind in ("same", "drifted"):
            for path in args.paths:
                results.append(_run_child(rows, kind, rows, [0], path))  # the whole window
                if rows > default_max:
                    results.append(_run_child(rows, kind, default_max, [0, 1, 2], path))  # sampled, three seeds

    paths = _compare_paths(results) if len(args.paths) == 2 else []
    agreement = {}
    last = args.paths[-1]
    for kind in ("same", "drifted"):
        big = [r for r in results if r["kind"] == kind and r["rows"] == sizes[-1] and r["path"] == last]
        whole = [r for r in big if not r["sampled"]]
        sampled = [r for r in big if r["sampled"]]
        if whole and sampled:
            reference, runs = whole[0]["runs"][0], sampled[-1]["runs"]  # the three-seed run
            agreement[kind] = {
                "whole_drifted": reference["drifted"],
                "sampled_drifted": [run["drifted"] for run in runs],
                "decisions_agree": all(run["drifted"] == reference["drifted"] for run in runs),
                "max_abs_score_difference": max(
                    abs(run["scores"][c] - reference["scores"][c]) for run in runs for c in run["scores"]
                ),
                # how far the whole window's nearest feature was from its threshold: a sampling error
                # smaller than this cannot flip a decision
                "nearest_margin": min(abs(v - threshold(c)) for c, v in reference["scores"].items()),
            }
    machine = {
        "cpus": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    import evidently
    import polars

    machine |= {"evidently": evidently.__version__, "polars": polars.__version__}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "machine": machine,
        "reference_rows": REFERENCE_ROWS,
        "score_tolerance": SCORE_TOLERANCE,
        "results": results,
        "agreement": agreement,
        "paths": paths,
    }
    RESULTS.write_text(json.dumps(out, indent=2))
    print(json.dumps(agreement, indent=2))
    print(f"results in {RESULTS.relative_to(ROOT)}")
    broken = [p for p in paths if not p["same_decisions"] or p["max_abs_score_difference"] > SCORE_TOLERANCE]
    if broken:
        sys.exit(f"the two paths disagree: {json.dumps(broken)}")
    if paths:
        worst = max(p["max_abs_score_difference"] for p in paths)
        print(f"before and after: the same drifted features on {len(paths)} checks, scores within {worst:.1e}")


def _compare_paths(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each window and seed, whether `before` and `after` flag the same features with the same scores."""
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for result in results:
        for run in result["runs"]:
            runs[(result["rows"], result["kind"], result["max_rows"], run["seed"], result["path"])] = run
    out = []
    for (rows, kind, max_rows, seed, path), after in runs.items():
        before = runs.get((rows, kind, max_rows, seed, "before"))
        if path != "after" or before is None:
            continue
        columns = [*after["scores"], "prediction"]
        scores = [(r["scores"] | {"prediction": r["prediction_score"]}) for r in (before, after)]
        out.append(
            {
                "rows": rows,
                "kind": kind,
                "max_rows": max_rows,
                "seed": seed,
                "same_decisions": all(before[k] == after[k] for k in ("drifted", "prediction_drifted")),
                "max_abs_score_difference": max(abs(scores[0][c] - scores[1][c]) for c in columns),
                "speedup": round(before["seconds"] / after["seconds"], 2),
            }
        )
    return out


if __name__ == "__main__":
    main()
