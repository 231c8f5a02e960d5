"""`dvc repro` on a fresh copy of the project: builds, caches, reruns only what a change affects."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from evergreen.orchestration.overrides import apply_overrides

from .workspace import FAST_TRAINING, ran_stages

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DATA_STAGES = ["ingest", "validate_raw", "clean", "validate_clean", "split"]


def _set_param(project: Path, pattern: str, replacement: str) -> None:
    params = project / "params.yaml"
    text, count = re.subn(pattern, replacement, params.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, pattern
    params.write_text(text)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the raw data is a folder of partitions), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_repro_builds_caches_and_reruns_only_what_changed(project, run):
    first = run("dvc", "repro", "split")
    assert ran_stages(first.stdout) == DATA_STAGES

    metrics = json.loads((project / "metrics/data.json").read_text())
    assert metrics["rows_in"] == 17381
    assert metrics["rows_out"] == 17379  # the two blank lines of the shipped file
    assert metrics["quarantined_by_reason"] == {"empty_row": 2}
    splits = {p: pl.read_parquet(project / f"data/split/{p}.parquet").height for p in ("train", "valid", "test")}
    assert splits == {"train": 14491, "valid": 1428, "test": 1460}
    assert (project / "reports/validation/docs/raw").is_dir()
    assert json.loads((project / "reports/validation/clean.json").read_text())["success"] is True

    assert ran_stages(run("dvc", "repro", "split").stdout) == []  # nothing changed, nothing runs

    _set_param(project, r'^  valid_from: "2012-09-01"', '  valid_from: "2012-10-01"')
    assert ran_stages(run("dvc", "repro", "split").stdout) == ["split"]

    _set_param(project, r"^  drop_duplicates: true", "  drop_duplicates: false")
    rerun = ran_stages(run("dvc", "repro", "split").stdout)
    assert rerun[0] == "clean" and "ingest" not in rerun and "validate_raw" not in rerun

    dag = run("dvc", "dag").stdout
    for stage in DATA_STAGES:
        assert stage in dag


def test_landing_file_becomes_a_new_raw_version(project, run):
    # split partition by partition from 1,000 rows: the shipped file is one partition, the landing file another
    _set_param(project, r"^  seed: 42", "  seed: 42\n  partitioned_from_rows: 1000")
    first = run("dvc", "repro", "split")
    assert "(1 partition(s), 1 split now" in first.stdout
    splits = {p: pl.read_parquet(project / f"data/split/{p}.parquet").height for p in ("train", "valid", "test")}
    assert splits == {"train": 14491, "valid": 1428, "test": 1460}  # the whole split's rows, by the same cuts
    raw_before = pl.read_parquet(project / "data/raw/raw.parquet")
    header = (project / "data/source/bike-sharing/hour.csv").read_text().splitlines()[0]
    landing = project / "data/incoming/2013-01-01.csv"
    landing.write_text(
        header + "\n"
        "17380,2013-01-01,1,1,1,0,1,2,1,1,0.2,0.2,0.5,0.1,3,40,43\n"
        "17379,2012-12-31,1,1,12,23,0,1,1,1,0.26,0.2727,0.65,0.1343,12,37,49\n"  # a re-delivered row
    )
    output = run("dvc", "repro", "split").stdout
    assert ran_stages(output)[:2] == ["ingest", "validate_raw"]
    raw_after = pl.read_parquet(project / "data/raw/raw.parquet")
    assert raw_after.height == raw_before.height + 1  # deduplicated by instant
    ingest = json.loads((project / "metrics/ingest.json").read_text())
    assert ingest["files"] == 2 and ingest["repeated_rows_dropped"] == 1
    assert raw_before.equals(raw_after.head(raw_before.height))  # earlier rows untouched
    # the new row is after the declared test cut: its partition is split alone, into test; the old one is kept
    assert "split: train 14491 rows, valid 1428 rows, test 1461 rows (2 partition(s), 1 split now" in output


@pytest.mark.usefixtures("data_stages_run")  # the copy has run `dvc repro split` already
def test_bad_landing_file_fails_ingest_and_records_nothing(project, run):
    run("dvc", "repro", "split")
    lock_before = (project / "dvc.lock").read_text()
    raw_before = _tree(project / "data/raw")
    (project / "data/incoming/bad.csv").write_text("instant,dteday,cnt\n1,2013-01-01,4\n")
    failed = run("dvc", "repro", "split", check=False)
    assert failed.returncode != 0
    assert "data/incoming/bad.csv: the columns differ from data.columns: missing declared column(s)" in failed.stdout
    assert (project / "dvc.lock").read_text() == lock_before
    assert _tree(project / "data/raw") == raw_before  # raw data untouched, every part and the manifest
    assert "ingest" in run("dvc", "status").stdout  # not recorded as up to date


@pytest.mark.usefixtures("data_stages_run")
def test_failed_clean_expectation_fails_the_stage_with_its_details(project, run):
    run("dvc", "repro", "split")
    suite_path = project / "expectations/clean.json"
    suite = json.loads(suite_path.read_text())
    for expectation in suite["expectations"]:
        if expectation["kwargs"].get("column") == "temp" and "max_value" in expectation["kwargs"]:
            expectation["kwargs"]["max_value"] = 0.5  # hand-tightened: real data goes above
    suite_path.write_text(json.dumps(suite, indent=2))
    failed = run("dvc", "repro", "split", check=False)
    assert failed.returncode != 0
    assert "expect_column_values_to_be_between" in failed.stdout and "'temp'" in failed.stdout
    assert "split" not in ran_stages(failed.stdout)


@pytest.mark.usefixtures("data_stages_run")
def test_push_and_pull_round_trip(project, run):
    run("dvc", "repro", "split")
    run("dvc", "push")
    shutil.rmtree(project / "data/raw")
    shutil.rmtree(project / ".dvc/cache")
    run("dvc", "pull", *DATA_STAGES)
    assert pl.read_parquet(project / "data/raw/raw.parquet").height == 17381
    assert ran_stages(run("dvc", "repro", "split").stdout) == []


@pytest.mark.usefixtures("data_stages_run")
def test_a_long_train_split_streams_through_train_and_is_sampled_by_evaluate(project, run):
    # the bundled 14,491 train rows count as long from 10,000 on: train reads them from the split's file in
    # record batches through a shuffle buffer, and the valid rows and the baselines' train rows are samples
    overrides = {
        **FAST_TRAINING,
        "train.stream": {"from_rows": 10_000, "shuffle_rows": 4096, "sample_rows": 1000},
        "evaluate.baseline_rows": 5000,
    }
    apply_overrides(project / "params.yaml", overrides)
    output = run("dvc", "repro", "evaluate").stdout
    assert ran_stages(output) == ["train", "evaluate"]
    assert "train: streaming 14491 train rows from 1 file(s); early stopping on 1000 valid rows" in output
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert metrics["streamed"] is True and metrics["n_train"] == 14491 and metrics["n_valid"] == 1000
    assert metrics["valid"]["r2"] > 0.5  # four epochs of a small network: it learnt, not just ran
    report = json.loads((project / "metrics/eval.json").read_text())
    assert report["baselines_fit_on"] == {"rows": 5000, "of": 14491}
    assert report["model"]["rmse"] < report["baselines"]["mean"]["rmse"]
