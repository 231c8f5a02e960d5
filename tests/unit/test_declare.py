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
    # an integer keeps its order, with an open range: min from the data (widened), no max
    assert _column(dirty, "cylinders").declaration | {} == {
        "name": "cylinders", "type": "int", "role": "feature", "kind": "numeric", "min": 3
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


# ------------------------------------------------------------------------ issue 21: declarations that keep order
def test_an_integer_count_stays_numeric_with_an_open_range():
    """Regression (issue 21): "number of service calls" (0-9) became a closed categorical, so 10 calls was out
    of range and its order was lost."""
    calls = pl.Series("service_calls", np.arange(N) % 10)
    result = infer(_table().with_columns(calls), "label")
    declared = _column(result, "service_calls").declaration
    assert declared["kind"] == "numeric" and declared["min"] == 0 and "max" not in declared
    assert "allowed" not in declared
    assert "keeps its order unless named like a code" in _column(result, "service_calls").reason
    loaded = parse_params({"data": result.data_section("t.csv")}).data.column("service_calls")
    assert loaded.max is None  # 10 calls is in range


@pytest.mark.parametrize("name", ["season", "hr", "weekday", "zip_code", "room_type"])
def test_an_integer_named_like_a_code_or_a_cycle_stays_categorical(name):
    result = infer(_table().with_columns(pl.Series(name, np.arange(N) % 4 + 1)), "label")
    declared = _column(result, name).declaration
    assert declared["kind"] == "categorical" and declared["allowed"] == [1, 2, 3, 4]
    assert "named like a code or a cycle" in _column(result, name).reason


@pytest.mark.parametrize(
    ("values", "order"),
    [
        (["High", "Low", "Medium"], ["Low", "Medium", "High"]),
        (["Very_High", "Low", "High", "Medium"], ["Low", "Medium", "High", "Very_High"]),
        (["Ideal", "Fair", "Good", "Premium", "Very Good"], ["Fair", "Good", "Very Good", "Premium", "Ideal"]),
        (["Best", "Bad", "Good", "Better"], ["Bad", "Good", "Better", "Best"]),
        (["B2", "A1", "C5", "A3"], ["A1", "A3", "B2", "C5"]),
    ],
)
def test_strings_on_a_known_scale_get_their_order(values, order):
    result = infer(_table().with_columns(pl.Series("grade", [values[i % len(values)] for i in range(N)])), "label")
    declared = _column(result, "grade").declaration
    assert declared["order"] == order and "allowed" not in declared
    assert "ordered: every value is on the scale" in _column(result, "grade").reason
    assert parse_params({"data": result.data_section("t.csv")}).data.column("grade").allowed == order


@pytest.mark.parametrize("values", [["north", "south", "east"], ["Low", "High"], ["Low", "Medium", "Spicy"]])
def test_no_order_unless_sure(values):
    result = infer(_table().with_columns(pl.Series("g", [values[i % len(values)] for i in range(N)])), "label")
    assert "order" not in _column(result, "g").declaration


def test_the_target_transform_is_decided_with_its_figures():
    rng = np.random.default_rng(1)
    skewed = _table().with_columns(price=pl.Series(rng.lognormal(3, 1, N)))
    result = infer(skewed, "price")
    assert result.target_transform == "log1p"
    assert "non-negative and right-skewed (skewness" in result.target_transform_reason
    symmetric = infer(_table().with_columns(price=pl.Series(rng.normal(50, 5, N))), "price")
    assert symmetric.target_transform == "none" and "skewness <= 1" in symmetric.target_transform_reason
    negative = infer(_table().with_columns(price=pl.Series(rng.lognormal(3, 1, N) - 5)), "price")
    assert negative.target_transform == "none" and "negative values" in negative.target_transform_reason
    assert infer(_table(), "label").target_transform == "none"  # classification


# ----------------------------------------------------------------------------------- issue 19: init's defects
def test_a_target_with_one_class_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"target column 'one' holds one value \('yes'\) in every row"):
        infer(_table().with_columns(one=pl.lit("yes")), "one")


def test_infinite_values_get_finite_bounds_and_clean_quarantines_them(tiny_raw):
    """Regression (issue 19): init wrote `min: -.inf, max: .inf` for a column holding inf."""
    from evergreen.config import CleanConfig
    from evergreen.data.clean import clean
    from evergreen.data.schema import LINEAGE, REASON

    values = np.linspace(1, 100, N)
    values[[3, 7]] = [np.inf, -np.inf]
    table = _table().with_columns(price=pl.Series(values), amount=pl.Series(values))
    result = infer(table, "price")
    for name in ("price", "amount"):
        declared = _column(result, name).declaration
        assert np.isfinite(declared["min"]) and np.isfinite(declared["max"]), declared
        assert "2 infinite value(s): outside the range, quarantined by clean" in _column(result, name).reason
    data = parse_params({"data": result.data_section("t.csv")}).data
    raw = table.with_columns(pl.all().cast(pl.String), pl.lit("t.csv").alias(LINEAGE[0]))
    raw = raw.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINEAGE[1]))
    cleaned = clean(raw.select([*data.names, *LINEAGE]), data, CleanConfig())
    assert cleaned.quarantine["customer_id"].to_list() == ["4", "8"]
    assert cleaned.quarantine[REASON].to_list() == ["out_of_range:price; out_of_range:amount"] * 2


def test_a_column_of_mostly_numbers_is_numeric_and_its_text_is_quarantined():
    """Regression (issue 19): a column 86% numbers was declared free text and ignored."""
    cells = [str(v) for v in np.random.default_rng(2).integers(0, 500, N)]
    cells = [("n/a" if i % 14 == 0 else "unknown value") if i % 7 == 0 else c for i, c in enumerate(cells)]
    cells = [None if i % 50 == 3 else c for i, c in enumerate(cells)]
    result = infer(_table().with_columns(income=pl.Series(cells)), "label")
    column = _column(result, "income")
    assert column.role == "feature" and column.declaration["type"] == "int"
    assert column.declaration["kind"] == "numeric"
    assert "of its cells are numbers (at least 80% makes a number column)" in column.reason
    assert f"its {sum(c in ('n/a', 'unknown value') for c in cells)} text cell(s) are quarantined" in column.reason
    assert "4 missing (2.00%): imputed with the median" in column.reason  # the text cells are not counted
    few = [c if i % 2 else "text" for i, c in enumerate(cells)]
    assert _column(infer(_table().with_columns(income=pl.Series(few)), "label"), "income").declaration["type"] == "str"


def test_a_header_with_an_unescaped_quote_is_named_by_line(tmp_path):
    """Regression (issue 19): init said "the table has no rows" for a 300-row file with a quote in its header."""
    path = tmp_path / "quoted.csv"
    path.write_text('a,b"c,label\n' + "".join(f"{i},{i * 2},{'xy'[i % 2]}\n" for i in range(300)))
    with pytest.raises(DataError, match=r'quoted.csv: line 1 \(the header\) holds an unescaped quote in \'b"c\''):
        read_table(path)
    path.write_text('a,"b,c",label\n1,2,x\n')  # a quoted name is fine
    assert read_table(path).columns == ["a", "b,c", "label"]


def test_init_prints_the_target_transform_with_its_figures(project, tmp_path):
    path = tmp_path / "prices.csv"
    rng = np.random.default_rng(3)
    _table().with_columns(price=pl.Series(rng.lognormal(3, 1, N).round(2))).write_csv(path)
    params = project / "params.yaml"
    result = CliRunner().invoke(app, ["init", str(path), "--target", "price", "--force", "-p", str(params)])
    assert result.exit_code == 0, result.output
    assert re.search(r"target transform: log1p \(non-negative and right-skewed \(skewness \d+\.\d\d", result.output)
    assert load_params(params).model.target_transform == "log1p"
    assert "integers with 3 values: numeric (an integer keeps its order" in result.output  # cylinders
