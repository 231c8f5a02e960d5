"""`evergreen init`: each inference rule with its reason, a dirty table, the params file it writes (comments
kept, old knobs reset, refusal without --force), and the derived-feature declaration it relies on."""

from __future__ import annotations

import copy
import datetime as dt
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from evergreen.cli import app
from evergreen.config import load_params, parse_params
from evergreen.declare.infer import infer, type_text
from evergreen.declare.write import declare, read_table
from evergreen.errors import ConfigError, DataError
from tests.harness import ROOT, TINY

N = 200


def _table(n: int = N, seed: int = 0) -> pl.DataFrame:
    """A dirty table: a key, free-text names, a date, string categories, numbers, junk columns, a target with
    missing values."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "customer_id": np.arange(1, n + 1),
            "name": [f"Customer number {i}" for i in range(n)],
            "day": [dt.date(2022, 1, 1) + dt.timedelta(days=i * 3) for i in range(n)],
            "origin": rng.choice(["usa", "europe", "japan"], n).tolist(),
            "cylinders": rng.choice([4, 6, 8], n),
            "weight": rng.uniform(1500, 5000, n).round(1),
            "hum": [None if i % 10 == 0 else float(v) for i, v in enumerate(rng.uniform(0, 1, n))],
            "constant": ["x"] * n,
            "sparse": [None if i % 4 else 1.0 for i in range(n)],
            "label": [None if i % 25 == 0 else str(v) for i, v in enumerate(rng.choice(["a", "b"], n))],
        }
    )


def _column(result, name: str):
    return next(c for c in result.columns if c.name == name)


@pytest.fixture(scope="module")
def dirty():
    return infer(_table(), "label")


@pytest.mark.parametrize(
    ("name", "role", "why"),
    [
        ("customer_id", "id", "unique integers, named like a key"),
        ("name", "ignore", "free text"),
        ("day", "timestamp", "a date column"),
        ("origin", "feature", "strings with 3 values: categorical"),
        ("cylinders", "feature", "integers with 3 values"),
        ("weight", "feature", "numeric"),
        ("constant", "ignore", "constant"),
        ("sparse", "ignore", "mostly null (75% missing)"),
        ("label", "target", "2 classes; 8 row(s) without it are quarantined"),
    ],
)
def test_each_column_gets_a_role_and_the_reason(dirty, name, role, why):
    column = _column(dirty, name)
    assert column.role == role
    assert why in column.reason


def test_kinds_ranges_sets_and_missing_policies(dirty):
    assert _column(dirty, "origin").declaration["allowed"] == ["europe", "japan", "usa"]
    assert _column(dirty, "cylinders").declaration | {} == {
        "name": "cylinders", "type": "int", "role": "feature", "kind": "categorical", "allowed": [4, 6, 8]
    }  # fmt: skip
    weight = _column(dirty, "weight").declaration
    span = _table()["weight"].max() - _table()["weight"].min()
    assert weight["kind"] == "numeric"
    assert weight["min"] == pytest.approx(_table()["weight"].min() - 0.1 * span, rel=1e-5)
    hum = _column(dirty, "hum").declaration
    assert hum["min"] == 0.0  # widened, but never below zero for a column without negative values
    assert hum["nullable"] and hum["missing"] == "impute_median"
    assert "20 missing (10.00%): imputed with the median" in _column(dirty, "hum").reason
    target = _column(dirty, "label").declaration
    assert target["missing"] == "quarantine" and target["allowed"] == ["a", "b"]


def test_the_task_the_split_and_the_calendar_features(dirty):
    assert dirty.task == "classification" and "strings" in dirty.task_reason
    assert dirty.timestamp == "day"
    valid_from, test_from = (dt.date.fromisoformat(dirty.split[k]) for k in ("valid_from", "test_from"))
    days = _table()["day"]
    assert dirty.split["method"] == "time"
    assert (days < valid_from).sum() > 0 and ((days >= valid_from) & (days < test_from)).sum() > 0
    assert (days >= test_from).sum() > 0
    # 200 rows every 3 days: the train part spans over a year, so every date part is derived
    assert [d["part"] for d in dirty.derived] == ["year", "month", "day_of_week", "day_of_year"]
    assert all(d["from"] == "day" for d in dirty.derived)


def test_a_short_history_derives_only_what_the_train_part_covers():
    short = _table().with_columns(day=pl.date_range(dt.date(2023, 1, 1), dt.date(2023, 7, 19), eager=True))
    result = infer(short, "label")
    assert [d["part"] for d in result.derived] == ["day_of_week"]
    assert "month: the train part spans" in result.derived_reason


def test_regression_and_an_overridden_task():
    table = _table().with_columns(price=pl.Series(np.linspace(1, 100, N)))
    assert infer(table, "price").task == "regression"
    assert infer(table, "cylinders").task == "classification"  # few integer values
    assert infer(table, "cylinders", task="regression").task == "regression"
    with pytest.raises(ConfigError, match="--task regression needs a numeric target; 'label' holds str"):
        infer(table, "label", task="regression")


def test_without_a_timestamp_the_split_is_random_and_stratified():
    result = infer(_table().drop("day"), "label")
    assert result.split == {"method": "random", "valid_fraction": 0.15, "test_fraction": 0.15, "stratify": True}
    assert result.derived == [] and result.timestamp is None


def test_string_keys_and_exact_duplicate_rows():
    table = _table().with_columns(code=pl.Series([f"C{i:04d}" for i in range(N)])).drop("customer_id")
    assert _column(infer(table, "label"), "code").role == "id"
    doubled = pl.concat([_table(), _table().head(5)])  # re-sent rows: the key is still a key
    assert _column(infer(doubled, "label"), "customer_id").role == "id"
    clash = _table().with_columns(customer_id=pl.Series(np.arange(N) % 150))  # differing rows share a key
    assert _column(infer(clash, "label"), "customer_id").role == "feature"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "nope"}, "--target 'nope' is not a column of the table (columns: customer_id, name"),
        ({"target": "label", "timestamp": "origin"}, "--timestamp 'origin' does not hold dates"),
        ({"target": "label", "margin": -1}, "--margin must be zero or more"),
    ],
)
def test_user_mistakes_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        infer(_table(), **kwargs)


def test_a_target_with_no_values_is_named():
    with pytest.raises(ConfigError, match="target column 'label' has no values"):
        infer(_table().with_columns(label=pl.lit(None, dtype=pl.String)), "label")


def test_text_is_typed_the_way_clean_reads_it():
    text = pl.DataFrame(
        {"i": [" 3", "4", ""], "f": ["1.5", "2", None], "g": ["91.0", "92.0", "93.0"],
         "d": ["2024-01-01", "2024-02-01", ""],
         "t": ["2024-01-01 10:00", "2024-01-02 11:30", None], "b": ["yes", "no", "yes"], "s": ["a", "3", "b"]}
    )  # fmt: skip
    typed = type_text(text)
    assert typed.schema == {"i": pl.Int64, "f": pl.Float64, "g": pl.Float64, "d": pl.Date, "t": pl.Datetime("us"),
                            "b": pl.Boolean, "s": pl.String}  # fmt: skip
    assert typed["i"].to_list() == [3, 4, None]


# ------------------------------------------------------------------------------------------------ writing
@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "project").mkdir()
    shutil.copy(ROOT / "params.yaml", tmp_path / "project" / "params.yaml")
    return tmp_path / "project"


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "cars.csv"
    path.parent.mkdir()
    _table().write_csv(path)
    return path


def test_init_refuses_to_replace_a_declaration_without_force(project, tmp_path):
    before = (project / "params.yaml").read_text()
    result = CliRunner().invoke(
        app, ["init", str(_csv(tmp_path)), "--target", "label", "-p", str(project / "params.yaml")]
    )
    assert result.exit_code == 1
    assert "already declares a dataset (data.source: data/source/bike-sharing/hour.csv); pass --force" in result.output
    assert (project / "params.yaml").read_text() == before
    assert not (project / "expectations").exists()


def test_init_writes_the_declaration_keeps_the_rest_and_resets_old_knobs(project, tmp_path):
    params = project / "params.yaml"
    result = CliRunner().invoke(app, ["init", str(_csv(tmp_path)), "--target", "label", "--force", "-p", str(params)])
    assert result.exit_code == 0, result.output
    assert "origin" in result.output and "strings with 3 values: categorical" in result.output
    text = params.read_text()
    loaded = load_params(params)
    assert loaded.data.source == "data/source/cars/cars.csv"  # copied into the project
    assert (project / "data/source/cars/cars.csv").read_bytes() == (tmp_path / "elsewhere/cars.csv").read_bytes()
    assert loaded.data.task == "classification" and loaded.data.timestamp.column == "day"
    assert [d.name for d in loaded.data.derived] == ["day_year", "day_month", "day_day_of_week", "day_day_of_year"]
    assert loaded.model.crosses == [] and loaded.model.additive == []
    assert loaded.monitor.policy.feature_thresholds == {}
    assert loaded.simulate.start == loaded.split.valid_from
    assert (
        "# ---------------------------------------------------------------------------------------------- serving"
        in text
    )
    assert "- {name: origin, type: str, role: feature" in text and "# strings with 3 values: categorical" in text
    assert "retrain_every: null" in text  # nulls stay written as null
    suite = yaml.safe_load((project / "expectations/clean.json").read_text())
    assert "origin" in str(suite) and "cnt" not in str(suite)


def test_a_table_inside_the_project_is_declared_where_it_is(project):
    inside = project / "data" / "mine.csv"
    inside.parent.mkdir()
    _table().write_csv(inside)
    done = declare(project, project / "params.yaml", inside, infer(read_table(inside), "label"), force=True)
    assert done.source == "data/mine.csv" and not (project / "data/source").exists()


def test_unreadable_tables_are_named(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(DataError, match="t.json: not a .csv or .parquet file"):
        read_table(tmp_path / "t.json")


# ------------------------------------------------------------------------------------ derived declaration
def _with_derived(derived: list[dict]) -> dict:
    raw = copy.deepcopy(TINY)
    raw["data"]["derived"] = derived
    return raw


def test_derived_features_are_validated_against_the_timestamp():
    ok = parse_params(_with_derived([{"name": "day_month", "from": "day", "part": "month"}]))
    assert ok.data.derived[0].kind == "categorical" and ok.data.model_inputs[-1] == "day_month"
    for derived, message in [
        ([{"name": "m", "from": "hr", "part": "month"}], r"derived\[0\] \(m\): from 'hr' must be the timestamp"),
        ([{"name": "h", "from": "day", "part": "hour"}], "part 'hour' needs a datetime timestamp"),
        ([{"name": "temp", "from": "day", "part": "year"}], "'temp' is already a column"),
        ([{"name": "m", "from": "day", "part": "week"}], r"data.derived\[0\].part: 'week' is not one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_params(_with_derived(derived))


def test_the_request_needs_the_timestamp_and_never_the_derived_features():
    from evergreen.serving.schema import build_schema

    params = parse_params(_with_derived([{"name": "day_month", "from": "day", "part": "month"}]))
    schema = build_schema(params.data, params.clean, 64)
    assert "day" in schema.features and "day" not in schema.annotations
    record = {"hr": 3, "weather": 1, "temp": 0.5, "hum": 0.5}
    with pytest.raises(Exception, match="day"):
        schema.validate_records([record])  # the model computes its month from it: required
    with pytest.raises(Exception, match="day_month"):
        schema.validate_records([record | {"day": "2024-01-01", "day_month": 1}])  # not a field
    assert schema.validate_records([record | {"day": "2024-01-01"}])[0]["day"] == dt.date(2024, 1, 1)
    plain = parse_params(copy.deepcopy(TINY))
    assert "day" in build_schema(plain.data, plain.clean, 64).annotations  # without derived: optional
