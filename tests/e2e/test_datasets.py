"""Datasets the project does not bundle, from a CSV to a monitored model, as a new user would go (issue 11):
`evergreen init data.csv --target y` -> `dvc repro` -> `evergreen predict` on the project's own test split ->
`evergreen serve` (predict, then labels through /feedback) -> `evergreen monitor`, with no hand edit of the
declaration.

The tables come from packages already installed (scikit-learn's breast-cancer, wine and diabetes) or are
generated (a timestamped classification stream whose second half has drifted, with a few dirty cells). Each
runs in its own copy of one template project; the only params set besides `init` are light training (these
tests are about the loop, not the model) and a smaller monitoring window.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from sklearn import datasets

from evergreen.config import load_params
from evergreen.orchestration.overrides import apply_overrides
from evergreen.registry.store import Registry
from tests.harness import run_command
from tests.service_harness import AUTH, running_server

from .workspace import FAST_TRAINING, copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROWS = 400  # at most this many rows per table: enough for a train part over `promote.min_train_rows`
# the loop, not the model: a light network, and a gate that lets a lightly trained model through
LIGHT = {
    **FAST_TRAINING,
    "train.epochs": 20,
    "train.patience": 5,
    "promote.baseline_margin": 1.0,
    "evaluate.hgb_max_iter": 50,
    "export.latency_runs": 10,
    "monitor.policy.min_rows": 20,  # a test split of a few dozen rows is a window worth judging here
}


# ------------------------------------------------------------------------------------------------ tables
def _sklearn(loader: Any, classes: list[str] | None = None) -> pl.DataFrame:
    """A scikit-learn toy dataset as a table: features with underscores for spaces, the target as `y`
    (class names instead of codes when `classes` is given), at most `ROWS` rows in a seeded order."""
    bunch = loader(as_frame=True)
    frame = pl.from_pandas(bunch.frame.rename(columns=lambda c: c.replace(" ", "_").replace("/", "_")))
    frame = frame.rename({"target": "y"})
    if classes is not None:
        frame = frame.with_columns(pl.col("y").replace_strict(dict(enumerate(classes))))
    return frame.sample(fraction=1.0, shuffle=True, seed=7).head(ROWS)


def breast_cancer() -> pl.DataFrame:
    """Binary classification with string classes, 30 numeric features."""
    return _sklearn(datasets.load_breast_cancer, classes=["malignant", "benign"])


def wine() -> pl.DataFrame:
    """Three classes (integer codes 0, 1, 2), 13 numeric features, 178 rows."""
    return _sklearn(datasets.load_wine)


def diabetes() -> pl.DataFrame:
    """Regression, 10 numeric features (already standardised by scikit-learn)."""
    return _sklearn(datasets.load_diabetes)


def stream(rows: int = 500, seed: int = 3) -> pl.DataFrame:
    """A timestamped classification stream: one row an hour, a string category, a free-text note, drift in the
    second half (`load` shifts by three standard deviations, and the class boundary with it), and dirt: blank
    and unparseable numbers, a missing label."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 3, 1)
    half = np.arange(rows) >= rows // 2
    load = rng.normal(0, 1, rows) + np.where(half, 3.0, 0.0)
    temp = rng.normal(20, 5, rows)
    site = rng.choice(["north", "south", "east"], rows, p=[0.5, 0.3, 0.2])
    signal = load - np.where(half, 3.0, 0.0) + 0.2 * (temp - 20) + np.where(site == "north", 0.8, 0.0)
    y = np.where(signal + rng.normal(0, 0.5, rows) > 0.4, "alarm", "ok")
    frame = pl.DataFrame(
        {
            "reading_id": np.arange(1, rows + 1),
            "at": [(start + dt.timedelta(hours=i)).isoformat(sep=" ") for i in range(rows)],
            "site": site,
            "load": [f"{v:.4f}" for v in load],
            "temp": [f"{v:.2f}" for v in temp],
            "note": [f"checked by operator {rng.integers(1_000_000)} at shift {i}" for i in range(rows)],
            "y": y,
        }
    )
    dirty = {("temp", 7): "", ("temp", 150): "n/a", ("load", 99): "", ("y", 42): ""}
    for (column, row), value in dirty.items():
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
    return frame


TABLES = {
    "breast_cancer": (breast_cancer, "classification"),
    "wine": (wine, "classification"),
    "diabetes": (diabetes, "regression"),
    "stream": (stream, "classification"),
}


# --------------------------------------------------------------------------------------------- the project
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One committed copy of the project; each dataset gets a plain copy of it (git history included)."""
    return copy_project(tmp_path_factory.mktemp("datasets") / "template")


def _records(schema: dict[str, Any], rows: pl.DataFrame) -> list[dict[str, Any]]:
    """Request records built from `GET /model`'s request schema: its fields, from the split's rows (dates and
    times as ISO text, as JSON carries them). A record never names a column the schema does not know."""
    fields = list(schema["items"]["properties"])
    present = [f for f in fields if f in rows.columns]
    assert set(schema["items"].get("required", [])) <= set(present), (fields, rows.columns)
    temporal = [n for n in present if rows.schema[n] in (pl.Date, pl.Datetime) or rows.schema[n].is_temporal()]
    frame = rows.select(present).with_columns(pl.col(n).cast(pl.String) for n in temporal)
    return frame.to_dicts()


@pytest.mark.parametrize("name", list(TABLES))
def test_a_table_goes_from_csv_to_a_monitored_model(name: str, template: Path, tmp_path: Path):
    make, task = TABLES[name]
    root = tmp_path / name
    shutil.copytree(template, root, symlinks=True)
    table = tmp_path / f"{name}.csv"
    make().write_csv(table)

    # init: the declaration and the suites from the table alone; the bundled bike declaration is replaced
    out = run_command(root, "evergreen", "init", table, "--target", "y", "--force").stdout
    assert "y" in out
    params = load_params(root / "params.yaml")
    assert params.data.task == task and params.data.target.name == "y"
    apply_overrides(root / "params.yaml", LIGHT)

    # the whole pipeline, with no further edit
    run_command(root, "dvc", "repro")
    registry = Registry(root / "models/registry")
    assert registry.champion() == "v1", (root / "metrics/promotion.json").read_text()
    evaluated = json.loads((root / "metrics/eval.json").read_text())
    metric = params.promote.metric_for(task)
    assert evaluated["model"][metric] is not None

    # batch scoring of the project's own test split, internal columns and all
    test = pl.read_parquet(root / "data/split/test.parquet")
    assert any(c.startswith("_") for c in test.columns) or params.data.timestamp is None
    run_command(root, "evergreen", "predict", "--input", "data/split/test.parquet", "--output", "scored.parquet")
    scored = pl.read_parquet(root / "scored.parquet")
    assert scored.height == test.height and scored["prediction"].null_count() == 0
    if task == "classification":
        classes = json.loads((root / "models/registry/v1/signature.json").read_text())["output"]["classes"]
        assert set(scored["prediction"].to_list()) <= set(classes)

    # serve: records built from the request schema, then the true labels through /feedback
    with running_server(root) as (url, _), httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        info = client.get("/model").json()
        assert info["task"] == task and info["version"] == "v1"
        records = _records(info["request_schema"], test)
        answer = client.post("/predict", json={"records": records})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        if task == "classification":
            assert answer.json()["classes"] == classes
            batch = scored.sort("_source_row")["prediction"].to_list()
            assert predictions == batch  # the service and `evergreen predict` run the same code path
        labels = test["y"].to_list()
        feedback = client.post("/feedback", json={"request_id": answer.json()["request_id"], "labels": labels})
        assert feedback.status_code == 200 and feedback.json()["labelled"] == len(labels), feedback.text
        if task == "classification":
            stray = client.post("/feedback", json={"request_id": answer.json()["request_id"],
                                                   "labels": ["no such class"] * len(labels)})  # fmt: skip
            assert stray.status_code == 422, stray.text

    # monitor: a decision on the labelled window, judged on the declared metric
    out = run_command(root, "evergreen", "monitor").stdout
    decisions = [json.loads(line) for line in (root / "monitoring/decisions.jsonl").read_text().splitlines()]
    [decision] = [d for d in decisions if d["kind"] == "decision"]
    assert decision["action"] in ("none", "retrain", "alert") and decision["champion"] == "v1", out
    assert decision["degradation"] is not None, decision  # labels arrived: the champion was judged on them
    report = json.loads(Path(root / "monitoring/reports").glob("*.json").__next__().read_text())
    assert any(m["config"]["type"].endswith(":ValueDrift") for m in report["metrics"])
    if name == "stream":
        assert "load" in decision["drifted_features"], decision  # the second half drifted
