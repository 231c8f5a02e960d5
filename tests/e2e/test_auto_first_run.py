"""The first run a newcomer sees: `evergreen init` on a small real table writes `model.type: auto`, then
`dvc repro` trains the candidates within a small time budget, chooses on valid, promotes a champion that
serves, and ends with the closing summary (also printed again by `evergreen summary`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from evergreen.inference import load_champion, predict
from evergreen.model.metrics import within_margin
from evergreen.orchestration.overrides import apply_overrides
from evergreen.registry.store import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TABLE = Path(__file__).parent / "fixtures" / "sacramento_400.csv"  # README there: source and licence


def test_init_then_dvc_repro_with_model_type_auto_serves_a_champion(project: Path, run, tmp_path: Path):
    table = tmp_path / "sacramento.csv"
    shutil.copy(TABLE, table)
    run("evergreen", "init", str(table), "--target", "price", "--force")
    assert yaml.safe_load((project / "params.yaml").read_text())["model"]["type"] == "auto"
    # a small budget for the test: the candidates share 20 s; one network member. The gate compares with the
    # linear baseline, which the `linear` candidate is (the same fit): so some candidate passes, the chosen one or
    # a later one on valid (on 400 rows, about 80 test rows, hgb can beat every candidate, and then the gate would
    # rightly promote nothing; the summary's no-champion lines have unit tests)
    overrides = {"train.time_budget_s": 20, "model.ensemble": 1, "promote.baseline": "linear"}
    apply_overrides(project / "params.yaml", overrides)
    repro = run("dvc", "repro")
    assert "promoted as v1" in repro.stdout, repro.stdout

    board = json.loads((project / "metrics/leaderboard.json").read_text())
    families = [row["family"] for row in board["candidates"]]
    assert {"lightgbm", "mlp"} <= set(families) and all(row["test"] is not None for row in board["candidates"])
    chosen = [row for row in board["candidates"] if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["valid"] == min(row["valid"] for row in board["candidates"])

    # the champion is the best candidate on valid that passed the gate: those refused before it were better on
    # valid, and the one promoted is at least the linear baseline on test
    promotion = json.loads((project / "metrics/promotion.json").read_text())
    valid = {row["family"]: row["valid"] for row in board["candidates"]}
    refused = [p["family"] for p in promotion.get("passed_over", [])]
    assert all(valid[family] <= valid[promotion["family"]] for family in refused), (refused, valid)
    assert [row["family"] for row in board["candidates"]][: len(refused) + 1] == [*refused, promotion["family"]]
    linear = json.loads((project / "metrics/eval.json").read_text())["baselines"]["linear"]["rmse"]
    promoted = next(row for row in board["candidates"] if row["family"] == promotion["family"])
    assert within_margin("rmse", promoted["test"], linear, 0.0), (promoted, linear)  # float32 rounding ties

    # the closing summary ends the run: short lines, the leaderboard, the verdict, the next command
    after = repro.stdout[repro.stdout.index("Leaderboard (RMSE") :].splitlines()  # DVC's own lines follow
    closing = after[: next(i for i, line in enumerate(after) if line.startswith("Next: ")) + 1]
    assert all(len(line) < 100 for line in closing) and len(closing) <= 12
    assert "Promoted: v1 is the champion" in repro.stdout
    assert closing[-1].startswith("Next: `evergreen serve` serves champion v1")
    assert run("evergreen", "summary").stdout.strip().splitlines() == closing

    champion = load_champion(Registry(project / "models/registry"))
    rows = pl.read_csv(table, infer_schema=False).head(5).drop("price")
    rows = rows.with_columns(pl.col(c).cast(pl.Float64) for c in ("beds", "baths", "sqft", "latitude", "longitude"))
    served = predict(champion, rows.with_columns(pl.col("beds").cast(pl.Int64), pl.col("sqft").cast(pl.Int64)))
    assert served.shape == (5,) and np.isfinite(served).all() and (served > 0).all()
