"""Benchmark the data half of the pipeline (issue 2): ingest, validate raw, clean, validate clean, split.

    python bench/bench_data_pipeline.py                 # 10 million rows, results to bench/results/
    python bench/bench_data_pipeline.py --rows 200000   # a quick run

What it does, in one run:
1. Scales the bundled bike data (`data.source` in params.yaml) up to `--rows` rows in a temporary folder,
   as a few CSV files: every repetition gets new `instant` ids and small noise on temp/atemp/hum/windspeed
   (kept in [0, 1]); dates move forward by whole years, and about 1% of the rows carry realistic dirt
   (padded cells, re-sent and corrected rows, blank rows, missing, unparseable and out-of-range cells).
2. Runs each step in a fresh Python process, so its peak memory is its own (VmHWM of that process:
   interpreter, imports, its input frame and its work). Seconds are the step's own call(s); reading the
   step's input Parquet is timed apart (`load_s` in the JSON).
3. Runs an idiomatic, vectorised pandas version of `clean` on the same raw frame, checks it agrees with
   evergreen's polars `clean` (rows, reasons, imputed and clipped counts, column sums), and reports
   the speedup.
4. Times a no-op `dvc repro split` in a throwaway git + DVC copy of the project, on the bundled data.
5. Partitions (issue 13): runs the real stages (`evergreen.stages.<name>.run`, what `dvc repro` runs), each in
   a fresh process, on a scratch project whose source is the generated files (one partition per file):
   a full build in one process (`EVERGREEN_DASK_SCHEDULER=synchronous`: peak RSS is all the work's), the same
   build on a local Dask cluster of 2 worker processes, then an arrival of `--arrival-rows` new rows into that
   history, processed incrementally and then rebuilt from scratch. Steps 1-3 above are "today's"
   implementation (the whole history in one frame: `read_text_table` + `combine`, `validate_frame`, `clean`),
   the library calls the stages made before partitions.

Dates: pandas, and Great Expectations through it, hold datetimes as datetime64[ns], which ends in 2262, so
every repetition cannot get its own two years at 10 million rows (that would run to the year ~3160). Instead
repetitions share a block of years, one block after another (like several stations over the same hours);
blocks move by multiples of four years so that 29 February stays a real date, and skip 2100 and 2200.

The time split uses `split.method: time` with fractions instead of the cut dates in params.yaml: on data
that runs for centuries the fixed 2012 cut dates would put almost every row in `test`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.e2e.workspace import copy_project  # noqa: E402

PARAMS = ROOT / "params.yaml"
STEPS = ("ingest", "validate_raw", "clean", "validate_clean", "split")
BIN = str(Path(sys.executable).parent)  # where `evergreen` and `dvc` are installed

# Dirt, as shares of generated rows; each kind goes to a different row.
CELL_DIRT: list[tuple[str, str, float]] = [
    # (kind, column, share)
    ("pad_right", "hr", 0.003),  # "0 " as in the bundled file: harmless after stripping
    ("pad_left", "weekday", 0.002),
    ("not_allowed", "weathersit", 0.001),  # 5: outside the allowed set -> quarantine
    ("above_max", "hum", 0.001),  # 1.05 -> clipped to 1
    ("below_min", "temp", 0.0005),  # -0.02 -> clipped to 0
    ("negative", "cnt", 0.0005),  # -1 -> quarantine
    ("missing", "hum", 0.001),  # empty -> imputed with the median
    ("blank", "hum", 0.001),  # whitespace only -> empty after stripping -> imputed
    ("missing", "windspeed", 0.001),
    ("missing", "cnt", 0.0003),  # the target: quarantine
    ("text", "temp", 0.0002),  # "n/a": unparseable -> quarantine
    ("fraction", "hr", 0.0001),  # "3.5" is not an int -> quarantine
    ("no_such_date", "dteday", 0.0001),  # "2011-02-30" -> quarantine
]
RESENT_SHARE = 0.003  # exact copies of earlier rows (same id, same content): ingest drops them
CORRECTED_SHARE = 0.0002  # same id, different cnt: ingest keeps the first and sets the later one aside
BLANK_ROW_SHARE = 0.0001  # every cell empty: clean quarantines them as empty_row


# ------------------------------------------------------------------------------------------ measuring
def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM; a fresh process per step makes it per step)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _Clock:
    """Named wall-clock laps, which may nest: `with clock("seconds"): ... with clock("read_s"): ...`."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.laps[name] = self.laps.get(name, 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------------------------------- generating
def _year_blocks() -> list[int]:
    """Year offsets for the copies of 2011-2012: multiples of 4 (leap days stay valid), up to 2260."""
    return [4 * m for m in range(63) if 2012 + 4 * m not in (2100, 2200)]


GENERATE_BLOCK = 10_000_000  # rows generated in memory at a time (30M rows at once would need ~20 GB)


def generate(rows: int, out_dir: Path, files: int, seed: int) -> dict[str, Any]:
    """Write `rows` scaled, jittered and slightly dirty rows of the bundled data as `files` CSV files, in
    blocks of at most `GENERATE_BLOCK` rows (each block its own ids and dirt, the same dates: like more
    stations over the same hours)."""
    n_blocks = math.ceil(rows / GENERATE_BLOCK)
    blocks: list[dict[str, Any]] = []
    for b in range(n_blocks):
        n = min(GENERATE_BLOCK, rows - b * GENERATE_BLOCK)
        written = sum(len(block["files"]) for block in blocks)
        blocks.append(_generate_block(n, out_dir, max(1, files // n_blocks), seed + b, b * GENERATE_BLOCK, written))
    added = ("rows_generated", "rows_written", "bytes", "repetitions")
    return {
        **blocks[-1],
        **{key: sum(block[key] for block in blocks) for key in added},
        "files": [path for block in blocks for path in block["files"]],
        "dirt": {kind: sum(block["dirt"][kind] for block in blocks) for kind in blocks[0]["dirt"]},
    }


def _generate_block(
    rows: int, out_dir: Path, files: int, seed: int, id_offset: int, file_offset: int
) -> dict[str, Any]:
    import numpy as np
    import polars as pl

    from evergreen.config import load_params

    data = load_params(PARAMS).data
    base = pl.read_csv(ROOT / data.source, infer_schema=False)
    base = base.filter(~pl.all_horizontal(pl.all().is_null()))  # the bundled blank lines; we add our own
    n_base = base.height
    reps = math.ceil(rows / n_base)
    blocks = _year_blocks()
    per_block = math.ceil(reps / len(blocks))
    rng = np.random.default_rng(seed)

    rep = np.arange(rows) // n_base
    shift = np.asarray(blocks)[rep // per_block]
    big = (
        pl.concat([base] * reps)
        .head(rows)
        .with_columns(_shift=pl.Series(shift), _pos=pl.Series(np.arange(rows, dtype=np.float64)))
    )
    date = pl.col("dteday").str.to_date("%Y-%m-%d")
    noisy = {
        c: (pl.col(c).cast(pl.Float64) + pl.Series(rng.normal(0, 0.01, rows))).clip(0, 1).round(4).cast(pl.String)
        for c in ("temp", "atemp", "hum", "windspeed")
    }
    big = big.with_columns(
        instant=pl.int_range(id_offset + 1, id_offset + rows + 1).cast(pl.String),
        dteday=pl.date(date.dt.year() + pl.col("_shift"), date.dt.month(), date.dt.day()).dt.strftime("%Y-%m-%d"),
        **noisy,
    ).drop("_shift")

    # cell dirt: one uniform draw per row picks at most one kind of dirt
    u = pl.Series(rng.random(rows))
    bounds = np.cumsum([0.0] + [share for *_, share in CELL_DIRT])
    dirty: dict[str, pl.Expr] = {}
    counts: dict[str, int] = {}
    u_np = u.to_numpy()
    for (kind, column, _), low, high in zip(CELL_DIRT, bounds[:-1], bounds[1:], strict=True):
        hit = (u >= low) & (u < high)
        counts[f"{kind}:{column}"] = int(((u_np >= low) & (u_np < high)).sum())
        value = {
            "pad_right": pl.col(column) + pl.lit(" "),
            "pad_left": pl.lit(" ") + pl.col(column),
            "not_allowed": pl.lit("5"),
            "above_max": pl.lit("1.05"),
            "below_min": pl.lit("-0.02"),
            "negative": pl.lit("-1"),
            "missing": pl.lit(None, dtype=pl.String),
            "blank": pl.lit("  "),
            "text": pl.lit("n/a"),
            "fraction": pl.lit("3.5"),
            "no_such_date": pl.lit("2011-02-30"),
        }[kind]
        dirty[column] = pl.when(pl.lit(hit)).then(value).otherwise(dirty.get(column, pl.col(column)))
    big = big.with_columns(**dirty)

    # extra rows, placed after their original (re-sent later, possibly in a later file)
    def later(idx: np.ndarray) -> pl.Series:
        return pl.Series(idx + rng.integers(1, 2 * n_base, idx.size) + 0.5)

    resent_idx = rng.choice(rows, int(rows * RESENT_SHARE), replace=False)
    resent = big[resent_idx].with_columns(_pos=later(resent_idx))
    corrected_idx = rng.choice(rows, int(rows * CORRECTED_SHARE), replace=False)
    corrected = big[corrected_idx].with_columns(
        cnt=(pl.col("cnt").str.strip_chars().cast(pl.Int64, strict=False) + 1).cast(pl.String),
        _pos=later(corrected_idx),
    )
    n_blank = int(rows * BLANK_ROW_SHARE)
    blank = pl.DataFrame(
        {c: pl.Series([None] * n_blank, dtype=pl.String) for c in data.names}
        | {"_pos": pl.Series(rng.uniform(0, rows, n_blank))}
    )
    everything = pl.concat([big, resent, corrected, blank]).sort("_pos").drop("_pos")

    out_dir.mkdir(parents=True, exist_ok=True)
    chunk = math.ceil(everything.height / files)
    paths = []
    for i in range(files):
        path = out_dir / f"part-{file_offset + i:03d}.csv"
        everything.slice(i * chunk, chunk).write_csv(path)
        paths.append(str(path))
    return {
        "rows_generated": rows,
        "rows_written": everything.height,
        "files": paths,
        "bytes": sum(Path(p).stat().st_size for p in paths),
        "repetitions": reps,
        "repetitions_per_year_block": per_block,
        "last_year": 2012 + blocks[(reps - 1) // per_block],
        "dirt": counts | {"resent_rows": len(resent_idx), "corrected_rows": len(corrected_idx), "blank_rows": n_blank},
    }


# ---------------------------------------------------------------------------------------------- steps
def _step_ingest(work: Path, params: Any, clock: _Clock, opts: argparse.Namespace) -> dict[str, Any]:
    from evergreen.data import io
    from evergreen.data.ingest import combine

    data = params.data
    with clock("seconds"):
        files = io.resolve_source(str(work / "csv" / "*.csv"))
        with clock("read_s"):
            frames = [io.read_text_table(f, data) for f in files]
        with clock("combine_s"):
            result = combine(frames, data.key)
        with clock("write_s"):
            io.write_parquet(result.raw, work / "raw.parquet")
            io.write_parquet(result.conflicts, work / "key_conflicts.parquet")
    summary = result.summary()
    return {
        "rows_in": summary["rows_read"],
        "rows_out": summary["rows_out"],
        "files": summary["files"],
        "repeated_rows_dropped": summary["repeated_rows_dropped"],
        "key_conflicts": summary["key_conflicts"],
    }


def _validate(stage: str, path: Path, params: Any, clock: _Clock, validate_rows: int | None) -> dict[str, Any]:
    import polars as pl

    from evergreen.validation.gx_adapter import validate_frame
    from evergreen.validation.suites import generate_suite

    with clock("load_s"):
        frame = pl.read_parquet(path)
        if validate_rows is not None:
            frame = frame.head(validate_rows)
    suite = generate_suite(params.data, stage)
    with clock("seconds"):
        summary = validate_frame(frame, suite, example_values=params.validation.example_values)
    failed = [f"{o.expectation_type}({o.column or ''})" for o in summary.outcomes if not o.success]
    return {
        "rows_in": frame.height,
        "rows_out": frame.height,
        "success": summary.success,
        "expectations": summary.evaluated,
        "failed": failed,
    }


def _step_validate_raw(work: Path, params: Any, clock: _Clock, opts: argparse.Namespace) -> dict[str, Any]:
    return _validate("raw", work / "raw.parquet", params, clock, opts.validate_rows)


def _step_validate_clean(work: Path, params: Any, clock: _Clock, opts: argparse.Namespace) -> dict[str, Any]:
    return _validate("clean", work / "clean.parquet", params, clock, opts.validate_rows)


def _checksums(frame: Any, columns: list[Any]) -> dict[str, float]:
    """Column sums of the numeric clean columns: a cheap check that two cleans give the same values."""
    return {c.name: float(frame[c.name].sum()) for c in columns if c.type in ("int", "float")}


def _step_clean(work: Path, params: Any, clock: _Clock, opts: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from evergreen.data import io
    from evergreen.data.clean import clean

    with clock("load_s"):
        raw = pl.read_parquet(work / "raw.parquet")
    runs = []
    for _ in range(opts.clean_repeats):
        result = None  # free the previous run's result first, so the peak is one run's
        started = time.perf_counter()
        result = clean(raw, params.data, params.clean)
        runs.append(time.perf_counter() - started)
    clock.laps["seconds"] = runs[0]
    with clock("write_s"):
        io.write_parquet(result.quarantine, work / "quarantine.parquet")
        io.write_parquet(result.clean, work / "clean.parquet")
    summary = result.summary()
    return {
        **summary,
        "runs_s": [round(t, 3) for t in runs],
        "rows_in": result.rows_in,
        "checksums": _checksums(result.clean, params.data.columns),
    }


def _step_split(work: Path, params: Any, clock: _Clock, opts: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from evergreen.data import io
    from evergreen.data.split import split, summarize

    # fractions, not the 2012 cut dates: see the module docstring
    config = params.split.model_copy(update={"valid_from": None, "test_from": None})
    with clock("load_s"):
        frame = pl.read_parquet(work / "clean.parquet")
    with clock("seconds"):
        parts = split(frame, params.data, config)
    with clock("write_s"):
        for name, part in parts.items():
            io.write_parquet(part, work / f"split-{name}.parquet")
    return {
        "rows_in": frame.height,
        "rows_out": sum(p.height for p in parts.values()),
        "parts": summarize(parts),
    }


# ------------------------------------------------------------------------------------ pandas `clean`
_TRUE = ["true", "t", "yes", "y", "1"]
_FALSE = ["false", "f", "no", "n", "0"]


def _pd_parse(text: Any, column: Any) -> Any:
    import numpy as np
    import pandas as pd

    match column.type:
        case "date":
            return pd.to_datetime(text, errors="coerce")
        case "datetime":
            return pd.to_datetime(text, errors="coerce")
        case "bool":
            lower = text.str.lower()
            return pd.Series(
                np.select([lower.isin(_TRUE), lower.isin(_FALSE)], [True, False], default=None),
                index=text.index,
                dtype="boolean",
            )
        case "int":
            # "3.0" is a valid int cell, "3.5" is not (as in evergreen's clean)
            number = pd.to_numeric(text, errors="coerce")
            return number.where((number == number.round()) & np.isfinite(number)).astype("Int64")
        case "float":
            return pd.to_numeric(text, errors="coerce").astype("float64")
        case _:
            return text


def _pd_bound(column: Any, value: Any) -> Any:
    import pandas as pd

    return pd.Timestamp(str(value)) if column.type in ("date", "datetime") else value


def _pd_out_of_range(values: Any, column: Any) -> Any:
    # comparisons on nullable Int64 give nullable booleans; plain numpy bools keep the flag frame one block
    if column.allowed is not None:
        return (values.notna() & ~values.isin(column.allowed)).astype(bool)
    outside = values.notna() & False
    if column.min is not None:
        outside |= (values < _pd_bound(column, column.min)).fillna(False)
    if column.max is not None:
        outside |= (values > _pd_bound(column, column.max)).fillna(False)
    return outside.astype(bool)


def pandas_clean(raw: Any, data: Any, policy: Any) -> dict[str, Any]:
    """The rules of `evergreen.data.clean.clean`, written in plain vectorised pandas."""
    import pandas as pd

    from evergreen.data.schema import EVENT_TIME, LINEAGE, REASON

    names = data.names
    text = raw[names].apply(lambda s: s.str.strip())
    text = text.mask(text == "")
    parsed = pd.DataFrame({c.name: _pd_parse(text[c.name], c) for c in data.columns})

    empty_row = text.isna().all(axis=1)
    flags: dict[str, Any] = {}
    if policy.drop_duplicates:
        flags["duplicate_row"] = text.duplicated(keep="first")
    for c in data.columns:
        present, value = text[c.name].notna(), parsed[c.name]
        flags[f"unparseable:{c.name}"] = present & value.isna()
        missing_policy = c.missing or ("keep" if c.nullable else policy.missing)
        if missing_policy == "quarantine":
            flags[f"missing:{c.name}"] = ~present
        if (c.out_of_range or policy.out_of_range) == "quarantine" and c.has_range:
            flags[f"out_of_range:{c.name}"] = _pd_out_of_range(value, c)
    flags = pd.DataFrame(flags)
    bad = empty_row | flags.any(axis=1)

    # reasons only for the rows set aside: a boolean frame dotted with its labels joins the true ones
    judged = flags[bad & ~empty_row]
    reasons = judged.dot(judged.columns + "; ").str.removesuffix("; ")
    quarantine = pd.concat([text[bad], raw.loc[bad, LINEAGE]], axis=1)
    quarantine[REASON] = reasons.reindex(quarantine.index).fillna("empty_row")

    typed = parsed[~bad].copy()
    imputed: dict[str, int] = {}
    clipped: dict[str, int] = {}
    for c in data.columns:
        missing_policy = c.missing or ("keep" if c.nullable else policy.missing)
        n_missing = int(typed[c.name].isna().sum())
        if n_missing and missing_policy.startswith("impute"):
            fill = {
                "impute_median": lambda s: s.median(),
                "impute_mode": lambda s: s.mode().iloc[0],
                "impute_constant": lambda s: c.fill_value,  # noqa: B023 (used at once)
            }[missing_policy](typed[c.name])
            if c.type == "int":
                fill = int(fill)
            typed[c.name] = typed[c.name].fillna(fill)
            imputed[c.name] = n_missing
    for c in data.columns:
        if (c.out_of_range or policy.out_of_range) != "clip" or c.allowed is not None or not c.has_range:
            continue
        n_outside = int(_pd_out_of_range(typed[c.name], c).sum())
        if n_outside:
            typed[c.name] = typed[c.name].clip(c.min, c.max)
            clipped[c.name] = n_outside
    if data.timestamp is not None:
        moment = typed[data.timestamp.column]
        if data.timestamp.hour_column:
            moment = moment + pd.to_timedelta(typed[data.timestamp.hour_column], unit="h")
        typed[EVENT_TIME] = moment
    return {
        "clean": typed,
        "quarantine": quarantine,
        "rows_in": len(raw),
        "imputed": imputed,
        "clipped": clipped,
    }


def _step_pandas_clean(work: Path, params: Any, clock: _Clock, opts: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from evergreen.data.schema import REASON

    with clock("load_s"):
        raw = pd.read_parquet(work / "raw.parquet")  # strings as Python objects, pandas' default
    runs = []
    for _ in range(opts.clean_repeats):
        result = None
        started = time.perf_counter()
        result = pandas_clean(raw, params.data, params.clean)
        runs.append(time.perf_counter() - started)
    clock.laps["seconds"] = runs[0]
    reasons = result["quarantine"][REASON].str.split("; ").explode().value_counts()
    return {
        "runs_s": [round(t, 3) for t in runs],
        "rows_in": result["rows_in"],
        "rows_out": len(result["clean"]),
        "rows_quarantined": len(result["quarantine"]),
        "quarantined_by_reason": dict(sorted((k, int(v)) for k, v in reasons.items())),
        "imputed": result["imputed"],
        "clipped": result["clipped"],
        "checksums": _checksums(result["clean"], params.data.columns),
    }


def _run_step(step: str, work: Path, opts: argparse.Namespace) -> None:
    """Body of a step's own process: measure, then write `<work>/<step>.json`."""
    from evergreen.config import load_params

    clock = _Clock()
    rss_after_import = _rss_mib()
    if step.startswith("stage:"):
        out = _step_stage(step.split(":", 1)[1], work, clock)
        _record(step, work, out, clock, rss_after_import)
        return
    params = load_params(PARAMS)
    body = {
        "ingest": _step_ingest,
        "validate_raw": _step_validate_raw,
        "clean": _step_clean,
        "validate_clean": _step_validate_clean,
        "split": _step_split,
        "pandas_clean": _step_pandas_clean,
    }[step]
    _record(step, work, body(work, params, clock, opts), clock, rss_after_import)


def _record(step: str, work: Path, out: dict[str, Any], clock: _Clock, rss_after_import: float) -> None:
    seconds = clock.laps["seconds"]
    out |= {
        "step": step,
        **{k: round(v, 3) for k, v in clock.laps.items()},
        "rows_per_s": round(out["rows_in"] / seconds) if seconds else None,
        "peak_rss_mib": round(_peak_rss_mib()),
        "rss_at_start_mib": round(rss_after_import),
    }
    (work / f"{step.replace(':', '-')}.json").write_text(json.dumps(out, indent=2, default=str))


def _spawn(step: str, work: Path, opts: argparse.Namespace, scheduler: str | None = None) -> dict[str, Any]:
    """Run one step in its own process. The later steps need ingest, clean and split, so those stop the
    run when they fail; a failed or timed-out validation or pandas run is recorded and the run goes on."""
    cmd = [sys.executable, __file__, "--_step", step, "--_work", str(work)]
    cmd += ["--clean-repeats", str(opts.clean_repeats)]
    if opts.validate_rows is not None:
        cmd += ["--validate-rows", str(opts.validate_rows)]
    print(f"  {step} ...", flush=True)
    started = time.perf_counter()
    timeout = opts.validate_timeout if step.startswith("validate") else None
    try:
        env = {k: v for k, v in os.environ.items() if k != "EVERGREEN_DASK_SCHEDULER"}
        if scheduler is not None:
            env["EVERGREEN_DASK_SCHEDULER"] = scheduler
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        error = (
            None
            if done.returncode == 0
            else (
                f"exit status {done.returncode}"
                + (" (killed: out of memory?)" if done.returncode in (-9, 137) else "")
                + f": {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
            )
        )
    except subprocess.TimeoutExpired:
        error = f"stopped after {timeout} s (--validate-timeout)"
    if error is not None:
        if step not in ("validate_raw", "validate_clean", "pandas_clean") and not step.startswith("stage:validate"):
            raise SystemExit(f"step {step} failed: {error}")
        print(f"  {step}: FAILED, {error}", flush=True)
        return {"step": step, "error": error, "process_s": round(time.perf_counter() - started, 3)}
    result = json.loads((work / f"{step.replace(':', '-')}.json").read_text())
    result["process_s"] = round(time.perf_counter() - started, 3)
    print(f"  {step}: {result['seconds']:.2f} s, peak {result['peak_rss_mib']} MiB", flush=True)
    return result


# ------------------------------------------------------------------------------------ no-op dvc repro
def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def measure_noop_repro(scratch: Path, repeats: int) -> dict[str, Any]:
    """Build `split` once in a throwaway git + DVC copy of the project, then time `dvc repro split` again."""
    dest = copy_project(scratch / "project")
    env = _env()

    def repro() -> tuple[float, str]:
        started = time.perf_counter()
        done = subprocess.run(
            ["dvc", "repro", "split"],
            cwd=dest,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dvc repro split failed: {done.stdout[-2000:]}")
        return time.perf_counter() - started, done.stdout

    try:
        build_s, _ = repro()
    except RuntimeError as exc:  # e.g. a half-edited file in the working tree; the other figures stand
        return {"error": str(exc)}
    times, outputs = [], []
    for _ in range(repeats):
        seconds, output = repro()
        times.append(seconds)
        outputs.append(output)
    ran = sorted({line for out in outputs for line in out.splitlines() if line.startswith("Running stage")})
    return {
        "first_build_s": round(build_s, 3),
        "noop_s": [round(t, 3) for t in times],
        "noop_median_s": round(statistics.median(times), 3),
        "stages_rerun_on_noop": ran,  # must be empty
    }


# ------------------------------------------------------------------------------------------ partitions
STAGE_STEPS = tuple(f"stage:{s}" for s in STEPS)


def _scratch_project(work: Path) -> Path:
    """A project whose source is the generated CSV files, with the bundled declaration and fresh suites."""
    import yaml

    from evergreen.validation.suites import write_suites
    from evergreen.workspace import Workspace

    project = work / "project"
    (project / "incoming").mkdir(parents=True, exist_ok=True)
    # DVC's folder, as `dvc init` leaves it: the stages keep their inputs' hashes in .dvc/tmp there
    (project / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(PARAMS.read_text())
    raw["data"] |= {"source": str(work / "csv" / "*.csv"), "incoming": "incoming"}
    raw["split"] = {"method": "time"}  # fractions, not the 2012 cut dates: see the module docstring
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    write_suites(Workspace.open(project).params.data, project / "expectations", overwrite=True)
    return project


def _step_stage(stage: str, project: Path, clock: _Clock) -> dict[str, Any]:
    import importlib

    from evergreen.workspace import Workspace

    ws = Workspace.open(project)
    module = importlib.import_module(f"evergreen.stages.{stage}")
    with contextlib.redirect_stdout(None), clock("seconds"):
        module.run(ws)
    gc.freeze()  # as `evergreen stage` does before its process exits
    if stage == "ingest":
        rows = json.loads(ws.ingest_metrics.read_text())["rows_read"]
    elif stage == "clean":
        rows = json.loads(ws.data_metrics.read_text())["rows_in"]
    elif stage.startswith("validate"):
        rows = json.loads(ws.validation_report(stage.split("_")[1]).read_text())["row_count"]
    else:
        rows = sum(json.loads(ws.split_metrics.read_text())[part]["rows"] for part in ("train", "valid", "test"))
    return {"rows_in": rows, "rows_out": rows}


def _land_arrival(work: Path, project: Path, rows: int) -> int:
    """`rows` new rows (new ids, a later year) as one landing file, cut from the generated data."""
    import polars as pl

    first = sorted((work / "csv").glob("*.csv"))[0]
    batch = pl.read_csv(first, infer_schema=False, n_rows=rows)
    batch = batch.with_columns(
        pl.col("instant").cast(pl.Int64, strict=False).add(10**12).cast(pl.String),
        pl.lit("2259-06-01").alias("dteday"),
    )
    batch.write_csv(project / "incoming" / "arrival.csv")
    return batch.height


def _stage_build(project: Path, opts: argparse.Namespace, scheduler: str | None, label: str) -> dict[str, Any]:
    print(f"{label}:", flush=True)
    started = time.perf_counter()
    steps = {step: _spawn(step, project, opts, scheduler=scheduler) for step in STAGE_STEPS}
    return {"steps": steps, "wall_s": round(time.perf_counter() - started, 2)}


def _forget_outputs(project: Path) -> None:
    import shutil

    for name in ("data", "reports", "metrics"):
        shutil.rmtree(project / name, ignore_errors=True)


@contextlib.contextmanager
def _local_cluster() -> Iterator[tuple[str, float]]:
    """A local Dask cluster of 2 worker processes (its address, and the seconds it took to start), as a user's
    own standing cluster would be used: every stage sends its partitions there."""
    import logging

    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        yield cluster.scheduler_address, round(time.perf_counter() - started, 2)


def _on_local_cluster(project: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """The full build on a local Dask cluster of 2 workers (started here, once, and timed apart)."""
    with _local_cluster() as (address, start_s):
        build = _stage_build(project, opts, address, "partitions, local Dask cluster of 2 workers")
    return build | {"cluster_start_s": start_s}


def _arrival_on_standing_cluster(project: Path, opts: argparse.Namespace, arrival: Path) -> dict[str, Any]:
    """The arrival again, on a cluster that stays up between runs: its workers import Great Expectations and
    polars once, for every stage and run, so an arrival pays only its own work. The history is rebuilt there
    without the arrival, then the arrival lands and is processed; the ratio is against that rebuild."""
    aside = project / "arrival.csv.aside"  # out of the landing folder, where any other file fails ingest
    arrival.rename(aside)
    _forget_outputs(project)
    with _local_cluster() as (address, start_s):
        rebuild = _stage_build(project, opts, address, "standing cluster: the history rebuilt")
        aside.rename(arrival)
        incremental = _stage_build(project, opts, address, "standing cluster: the arrival")
    share = round(incremental["wall_s"] / rebuild["wall_s"], 4) if rebuild["wall_s"] else None
    return {"rebuild": rebuild, "arrival": incremental, "cluster_start_s": start_s, "arrival_share": share}


def measure_partitions(work: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """Full builds (one process; a local Dask cluster of 2), then an arrival: incremental against a rebuild."""
    project = _scratch_project(work)
    if opts.standing_only:
        arrived = _land_arrival(work, project, opts.arrival_rows)
        arrival = project / "incoming" / "arrival.csv"
        return {"arrival_rows": arrived, "standing_cluster": _arrival_on_standing_cluster(project, opts, arrival)}
    out: dict[str, Any] = {"full_one_process": _stage_build(project, opts, "synchronous", "partitioned, one process")}
    if not opts.skip_dask:
        _forget_outputs(project)
        out["full_local_cluster"] = _on_local_cluster(project, opts)
    if opts.skip_arrival:
        return out
    arrived = _land_arrival(work, project, opts.arrival_rows)
    out["arrival_rows"] = arrived
    out["arrival_incremental"] = _stage_build(project, opts, "synchronous", f"an arrival of {arrived:,} rows")
    _forget_outputs(project)
    out["arrival_full_rebuild"] = _stage_build(project, opts, "synchronous", "the same history rebuilt")
    inc, full = out["arrival_incremental"]["wall_s"], out["arrival_full_rebuild"]["wall_s"]
    out["incremental_share_of_rebuild"] = round(inc / full, 4) if full else None
    if opts.standing_cluster:
        out["standing_cluster"] = _arrival_on_standing_cluster(project, opts, project / "incoming" / "arrival.csv")
    return out


# ---------------------------------------------------------------------------------------------- report
def _machine() -> dict[str, Any]:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("polars", "pandas", "pyarrow", "great_expectations", "dvc")}


def compare_cleans(polars: dict[str, Any], pandas: dict[str, Any], runs: int) -> dict[str, Any] | None:
    """Speedup of polars over pandas (best run of each), and whether both cleaned the data the same way."""
    if "error" in pandas:
        return None
    compared = ("rows_out", "rows_quarantined", "quarantined_by_reason", "imputed", "clipped")
    mismatches = {k: (polars[k], pandas[k]) for k in compared if polars[k] != pandas[k]}
    for name, value in polars["checksums"].items():
        other = pandas["checksums"][name]
        if not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-6):
            mismatches[f"sum:{name}"] = (value, other)
    best_polars, best_pandas = min(polars["runs_s"]), min(pandas["runs_s"])
    return {
        "polars_best_s": best_polars,
        "pandas_best_s": best_pandas,
        "speedup": round(best_pandas / best_polars, 1),
        "speedup_first_run": round(pandas["seconds"] / polars["seconds"], 1),
        "runs": runs,
        "same_result": not mismatches,
        "mismatches": mismatches,
    }


def table(results: dict[str, Any]) -> str:
    """The results as a markdown table, one row per step."""
    lines = [
        "| step | rows in | seconds | rows/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {"clean": "clean (polars, evergreen)", "pandas_clean": "clean (pandas, same rules)"}
    for name, r in results["steps"].items():
        if "error" in r:
            lines.append(f"| {labels.get(name, name)} | | failed: {r['error']} | | |")
            continue
        lines.append(
            f"| {labels.get(name, name)} | {r['rows_in']:,} | {r['seconds']:.2f} | {r['rows_per_s']:,} "
            f"| {r['peak_rss_mib']:,} |"
        )
    return "\n".join(lines)


def partition_table(results: dict[str, Any]) -> str:
    """Today's whole-history steps beside the partitioned stages, and the arrival's cost."""
    parts = results["partitions"]
    if "full_one_process" not in parts:  # --standing-only
        return _standing_line(parts)
    old = results["steps"]
    builds = {"full_one_process": "partitions, 1 process", "full_local_cluster": "partitions, Dask 2 workers"}
    lines = [
        "| step | today: rows/s | today: peak RSS (MiB) | "
        + " | ".join(f"{label}: rows/s | {label}: s" for key, label in builds.items() if key in parts)
        + " | partitions, 1 process: peak RSS (MiB) |",
        "|---|---:|---:|" + "---:|---:|" * sum(k in parts for k in builds) + "---:|",
    ]
    for stage in STEPS:
        today = old.get(stage, {})
        cells = [f"{today['rows_per_s']:,}" if today.get("rows_per_s") else "", f"{today.get('peak_rss_mib', ''):,}"
                 if today.get("peak_rss_mib") else ""]  # fmt: skip
        for key in builds:
            if key in parts:
                r = parts[key]["steps"][f"stage:{stage}"]
                cells += [f"{r['rows_per_s']:,}", f"{r['seconds']:.2f}"] if "error" not in r else ["failed", ""]
        one = parts["full_one_process"]["steps"][f"stage:{stage}"]
        cells.append(f"{one.get('peak_rss_mib', ''):,}" if one.get("peak_rss_mib") else "")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    walls = ", ".join(f"{builds[k]} {parts[k]['wall_s']:.1f} s" for k in builds if k in parts)
    lines.append("")
    lines.append(f"full build, five stages, wall: {walls}")
    if "full_local_cluster" in parts:
        lines.append(f"(starting the local cluster took {parts['full_local_cluster']['cluster_start_s']:.1f} s, apart)")
    if "arrival_rows" not in parts:
        return "\n".join(lines)
    lines.append(
        f"an arrival of {parts['arrival_rows']:,} rows: incremental {parts['arrival_incremental']['wall_s']:.1f} s, "
        f"full rebuild {parts['arrival_full_rebuild']['wall_s']:.1f} s "
        f"({parts['incremental_share_of_rebuild']:.1%} of the rebuild)"
    )
    if "standing_cluster" in parts:
        lines.append(_standing_line(parts))
    return "\n".join(lines)


def _standing_line(parts: dict[str, Any]) -> str:
    standing = parts["standing_cluster"]
    own = {step.split(":", 1)[1]: r.get("seconds") for step, r in standing["arrival"]["steps"].items()}
    return (
        f"on a standing cluster, an arrival of {parts['arrival_rows']:,} rows: {standing['arrival']['wall_s']:.2f} s "
        f"against a rebuild of {standing['rebuild']['wall_s']:.1f} s ({standing['arrival_share']:.1%}); "
        f"the stages' own seconds: {own}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows to generate (default 10 million)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "data_pipeline.json")
    parser.add_argument("--skip-validate", action="store_true", help="skip the two Great Expectations steps")
    parser.add_argument(
        "--validate-rows",
        type=int,
        default=None,
        help="validate only the first N rows (GX is far slower than the rest); default: all rows",
    )
    parser.add_argument(
        "--clean-repeats",
        type=int,
        default=3,
        help="run polars and pandas `clean` this many times each; the speedup uses the best run of each",
    )
    parser.add_argument(
        "--validate-timeout", type=int, default=1800, help="give up on a validation step after this many s"
    )
    parser.add_argument("--files", type=int, default=4, help="CSV files to spread the rows over")
    parser.add_argument("--repro-repeats", type=int, default=5, help="no-op `dvc repro` runs (median kept)")
    parser.add_argument("--skip-repro", action="store_true", help="skip the no-op `dvc repro` measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-old", action="store_true", help="skip today's whole-history steps (and pandas)")
    parser.add_argument("--skip-pandas", action="store_true", help="skip the pandas `clean` comparison")
    parser.add_argument("--skip-partitions", action="store_true", help="skip the partitioned stages (issue 13)")
    parser.add_argument("--skip-dask", action="store_true", help="skip the build on a local Dask cluster")
    parser.add_argument("--arrival-rows", type=int, default=100_000, help="rows of the arrival (issue 13)")
    parser.add_argument("--skip-arrival", action="store_true", help="skip the arrival (incremental vs rebuild)")
    parser.add_argument(
        "--standing-cluster", action="store_true", help="also the arrival on a Dask cluster that stays up"
    )
    parser.add_argument(
        "--standing-only", action="store_true", help="only the arrival on a standing cluster (no one-process builds)"
    )
    parser.add_argument("--_step", help=argparse.SUPPRESS)
    parser.add_argument("--_work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._step == "generate":
        dataset = generate(args.rows, args._work / "csv", args.files, args.seed)
        (args._work / "generate.json").write_text(json.dumps(dataset | {"peak_rss_mib": round(_peak_rss_mib())}))
        return
    if args._step:
        _run_step(args._step, args._work, args)
        return

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evergreen-bench-") as tmp:
        work = Path(tmp)
        print(f"generating {args.rows:,} rows in {work} ...", flush=True)
        gen_started = time.perf_counter()
        generate_cmd = [sys.executable, __file__, "--_step", "generate", "--_work", str(work)]
        generate_cmd += ["--rows", str(args.rows), "--files", str(args.files), "--seed", str(args.seed)]
        done = subprocess.run(generate_cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"generating the data failed:\n{done.stderr[-4000:]}")
        dataset = json.loads((work / "generate.json").read_text())
        dataset["seconds"] = round(time.perf_counter() - gen_started, 1)
        print(f"  {dataset['rows_written']:,} rows, {dataset['bytes'] / 2**20:,.0f} MiB of CSV", flush=True)

        steps = [s for s in STEPS if not (args.skip_validate and s.startswith("validate"))]
        steps += [] if args.skip_pandas else ["pandas_clean"]
        results: dict[str, Any] = {}
        for step in [] if args.skip_old else steps:
            results[step] = _spawn(step, work, args)
        partitioned = None if args.skip_partitions else measure_partitions(work, args)

        comparison = (
            compare_cleans(results["clean"], results["pandas_clean"], args.clean_repeats)
            if "pandas_clean" in results
            else None
        )
        repro = None
        if not args.skip_repro:
            print("no-op dvc repro (bundled data) ...", flush=True)
            repro = measure_noop_repro(work, args.repro_repeats)

    report = {
        "command": " ".join(["python", "bench/bench_data_pipeline.py", *sys.argv[1:]]),
        "rows": args.rows,
        "validate_rows": args.validate_rows,
        "machine": _machine(),
        "versions": _versions(),
        "dataset": dataset,
        "steps": results,
        "pandas_vs_polars_clean": comparison,
        "partitions": partitioned,
        "noop_dvc_repro": repro,
        "total_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    print()
    print(table(report))
    if partitioned is not None:
        print()
        print(partition_table(report))
    print()
    if comparison is not None:
        verdict = (
            "same clean and quarantined rows" if comparison["same_result"] else f"DIFFER: {comparison['mismatches']}"
        )
        print(
            f"clean, best of {args.clean_repeats}: polars {comparison['polars_best_s']:.2f} s, pandas "
            f"{comparison['pandas_best_s']:.2f} s: polars {comparison['speedup']}x faster "
            f"(first runs: {comparison['speedup_first_run']}x; {verdict})"
        )
    if repro and "error" in repro:
        print(f"no-op `dvc repro split`: FAILED, {repro['error']}")
    elif repro:
        print(
            f"no-op `dvc repro split`: median {repro['noop_median_s']:.2f} s of {repro['noop_s']} "
            f"(first build {repro['first_build_s']:.1f} s)"
        )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
