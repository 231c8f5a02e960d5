"""A table the project has never seen, from CSV to served predictions with no hand edit: `evergreen init` then
`dvc repro`, then batch and service scoring. scikit-learn's wine, with a date (calendar features), a string
category, a free-text column and a few rows without a label."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_wine

from evergreen.orchestration.overrides import apply_overrides
from evergreen.serving.service import PredictionService
from evergreen.workspace import Workspace

from .workspace import FAST_TRAINING

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROWS = 300


def _wine_csv(path: Path) -> pl.DataFrame:
    wine = load_wine(as_frame=True).frame
    rng = np.random.default_rng(0)
    rows = wine.sample(ROWS, replace=True, random_state=0).reset_index(drop=True)
    frame = pl.from_pandas(rows).rename({"target": "cultivar"})
    frame = frame.with_columns(
        pl.col("alcohol") + pl.Series(rng.normal(0, 0.05, ROWS)),  # resampled rows are not exact duplicates
        tasted=pl.Series([dt.date(2021, 1, 1) + dt.timedelta(days=3 * i) for i in range(ROWS)]),
        # a string category that carries some signal, and a free-text column the model must not see
        region=pl.Series(
            np.where(rng.uniform(size=ROWS) < 0.7, frame["cultivar"], rng.integers(0, 3, ROWS))
        ).replace_strict({0: "north", 1: "valley", 2: "coast"}, return_dtype=pl.String),
        note=pl.Series([f"tasting note number {i}, with words" for i in range(ROWS)]),
        cultivar=pl.when(pl.int_range(ROWS) % 40 == 7).then(None).otherwise(pl.col("cultivar").cast(pl.String)),
    )
    frame.write_csv(path)
    return frame


def test_init_then_dvc_repro_then_predict(project: Path, run, tmp_path: Path):
    table = _wine_csv(tmp_path / "wine.csv")
    refused = run("evergreen", "init", str(tmp_path / "wine.csv"), "--target", "cultivar", check=False)
    assert refused.returncode == 1 and "pass --force" in refused.stdout

    done = run("evergreen", "init", str(tmp_path / "wine.csv"), "--target", "cultivar", "--force")
    assert "task: classification" in done.stdout and "free text" in done.stdout
    assert "target transform: none (classification" in done.stdout
    apply_overrides(project / "params.yaml", FAST_TRAINING)  # light training; the declaration is untouched
    repro = run("dvc", "repro")
    assert re.search(r"promote: challenger \w+ promoted as v1", repro.stdout), repro.stdout
    assert "{'missing:cultivar': 8}" in repro.stdout  # the rows without a label, quarantined by clean

    signature = json.loads((project / "models/signature.json").read_text())
    names = [c["name"] for c in signature["input"]["columns"]]
    assert "region" in names and "note" not in names
    assert {d["part"] for d in signature["input"]["derived"]} == {"year", "month", "day_of_week", "day_of_year"}

    rows = table.head(6).drop("cultivar").with_columns(region=pl.Series(["north", "mars", *["coast"] * 4]))
    rows.write_csv(tmp_path / "rows.csv")
    scored = run("evergreen", "predict", "-i", str(tmp_path / "rows.csv"), "-o", str(tmp_path / "scored.csv"))
    assert "scored 6 of 6 rows with v1" in scored.stdout
    predictions = pl.read_csv(tmp_path / "scored.csv")
    assert set(predictions["prediction"].cast(pl.String)) <= {"0", "1", "2"}

    # the service: the date is a request field, the calendar features are not
    service = PredictionService(Workspace.open(project))
    try:
        records = rows.head(2).drop("note").with_columns(pl.col("tasted").cast(pl.String)).to_dicts()
        answer = service.predict({"records": records})
        assert answer["model_version"] == "v1" and len(answer["predictions"]) == 2
        assert [str(p) for p in answer["predictions"]] == predictions["prediction"].cast(pl.String).head(2).to_list()
        assert "tasted" in service.schema.features
        assert "tasted_month" not in service.schema.json_schema["items"]["properties"]
    finally:
        service.close()
