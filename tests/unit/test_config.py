from __future__ import annotations

from pathlib import Path

import pytest

from evergreen.config import load_params, parse_params
from evergreen.errors import ConfigError


def test_bundled_params_load(bundled_params):
    data = bundled_params.data
    assert data.target.name == "cnt"
    assert data.id_column is not None and data.id_column.name == "instant"
    roles = {c.name: c.role for c in data.columns}
    assert roles["casual"] == roles["registered"] == "ignore"  # leakage: casual + registered = cnt
    assert "casual" not in [c.name for c in data.features]


def test_bad_role_names_the_key_path(tiny_raw):
    tiny_raw["data"]["columns"][3]["role"] = "lable"
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    assert "data.columns[3].role: 'lable' is not one of: feature, target, timestamp, id, ignore" in str(err.value)


def test_unknown_key_is_rejected(tiny_raw):
    tiny_raw["split"] = {"method": "time", "valid_frm": "2012-01-01"}
    with pytest.raises(ConfigError, match=r"split.valid_frm: unknown key"):
        parse_params(tiny_raw)


def test_wrong_type_names_the_key(tiny_raw):
    tiny_raw["data"]["columns"][4]["min"] = "low"
    with pytest.raises(ConfigError, match=r"data.columns\[4\]"):
        parse_params(tiny_raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["columns"].append({"name": "y", "type": "int", "role": "feature"}),
            "unique; repeated: y",
        ),
        (lambda d: d["columns"].pop(), "exactly one column must have role 'target'"),
        (lambda d: d["timestamp"].update(column="when"), "timestamp.column 'when' is not a declared column"),
        (lambda d: d["columns"][3].update(min=0), "either an allowed set or a min/max range"),
        (
            lambda d: d["columns"][2].update(min=5, max=1),
            r"data.columns\[2\]: min \(5.0\) is greater than max \(1.0\)",
        ),
        (lambda d: d["columns"][1].update(kind="numeric"), "kind 'numeric' needs type int or float"),
    ],
)
def test_inconsistent_data_declarations(tiny_raw, change, message):
    change(tiny_raw["data"])
    with pytest.raises(ConfigError, match=message):
        parse_params(tiny_raw)


def test_split_dates_must_be_ordered(tiny_raw):
    tiny_raw["split"] = {"valid_from": "2012-05-01", "test_from": "2012-01-01"}
    with pytest.raises(ConfigError, match="split: valid_from must be before test_from"):
        parse_params(tiny_raw)


def test_split_and_replay_moments_with_a_time_zone_are_refused_by_name(tiny_raw):
    # the data's times are compared as written, without a zone; Python cannot order the two kinds, so a zoned
    # cut once crashed the parse with a TypeError
    tiny_raw["split"] = {"valid_from": "2023-06-01T00:00:00+02:00", "test_from": "2024-02-01T00:00:00Z"}
    tiny_raw["simulate"] = {"start": "2023-06-01T00:00:00Z"}
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    for field in ("split.valid_from", "split.test_from", "simulate.start"):
        assert f"{field}: Input should not have timezone info" in str(err.value)


def test_a_declared_time_bound_with_a_zone_is_refused_by_name(tiny_raw):
    # it once crashed the cut checks with the same TypeError
    timestamp = tiny_raw["data"]["timestamp"]["column"]
    column = next(c for c in tiny_raw["data"]["columns"] if c["name"] == timestamp)
    column["max"] = "2030-01-01T00:00:00+00:00"
    tiny_raw["split"] = {"valid_from": "2023-06-01", "test_from": "2024-02-01"}
    with pytest.raises(ConfigError, match=r"max '2030-01-01T00:00:00\+00:00' has a time zone, but the cleaned"):
        parse_params(tiny_raw)


def test_missing_params_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "params.yaml")


def test_params_file_that_is_not_a_mapping(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(path)


def test_kind_defaults_from_type(tiny):
    kinds = {c.name: c.kind for c in tiny.data.columns}
    assert kinds["temp"] == "numeric" and kinds["day"] == "categorical" and kinds["hr"] == "categorical"


def test_feature_threshold_for_an_unknown_feature_is_rejected(tiny_raw):
    tiny_raw["monitor"] = {"policy": {"feature_thresholds": {"tmep": 0.2}}}
    with pytest.raises(ConfigError, match=r"monitor.policy.feature_thresholds.tmep: 'tmep' is not a feature"):
        parse_params(tiny_raw)


def test_every_cross_reference_is_checked_in_one_pass_with_its_key_path(tiny_raw):
    tiny_raw["data"]["columns"][1]["min"] = "2024-01-01"  # the timestamp column `day`
    tiny_raw["model"] = {"crosses": [["weather", "hour"], ["temp", "hr"]], "additive": ["yr"]}
    tiny_raw["promote"] = {"metric": "accuracy", "baseline": "hgb"}
    tiny_raw["evaluate"] = {"baselines": ["mean", "linear"]}
    tiny_raw["monitor"] = {"policy": {"feature_thresholds": {"season": 0.9}}}
    tiny_raw["simulate"] = {"start": "2012-01-01"}
    tiny_raw["split"] = {"valid_from": "2023-06-01", "test_from": "2024-02-01"}
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    lines = str(err.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "model.crosses[0][1]",
        "model.crosses[1][0]",
        "model.additive[0]",
        "promote.metric",
        "promote.baseline",
        "split.valid_from",
        "simulate.start",
        "monitor.policy.feature_thresholds.season",
    ]
    assert "model.crosses[0][1]: 'hour' is not a declared feature" in lines[0]
    assert "'temp' is numeric; a cross takes categoricals" in lines[1]
    assert "promote.metric: 'accuracy' does not suit regression (use one of: rmse, mae, r2)" in lines[3]
    assert "<top level>" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"promote": {"metric": "roc_auc"}}, r"promote.metric: roc_auc needs a binary target; 'y' allows 3 classes"),
        ({"promote": {"metric": "rmse"}}, r"promote.metric: 'rmse' does not suit classification"),
        ({"model": {"target_transform": "log1p"}}, r"model.target_transform: log1p applies to regression only"),
        ({"split": {"method": "time", "test_from": "2030-01-01", "valid_from": "2029-01-01"}}, r"split.test_from: "),
    ],
)
def test_task_and_range_cross_references(tiny_raw, change, message):
    tiny_raw["data"]["task"] = "classification"
    tiny_raw["data"]["columns"][-1] = {"name": "y", "type": "int", "role": "target", "allowed": [0, 1, 2]}
    tiny_raw["data"]["columns"][1]["max"] = "2024-12-31"
    tiny_raw.update(change)
    with pytest.raises(ConfigError, match=message):
        parse_params(tiny_raw)


def test_the_defaults_follow_the_data(tiny_raw):
    params = parse_params(tiny_raw)
    assert params.promote.metric_for("regression") == "rmse" and params.split.method_for(params.data) == "time"
    tiny_raw["data"]["task"] = "classification"
    tiny_raw["data"].pop("timestamp")
    tiny_raw["data"]["columns"].pop(1)  # the date column
    classification = parse_params(tiny_raw)
    assert classification.promote.metric_for("classification") == "f1_macro"
    assert classification.split.method_for(classification.data) == "random"
    negative = tiny_raw | {"data": {**tiny_raw["data"], "task": "regression"}}
    negative["data"]["columns"][-1] = {"name": "y", "type": "float", "role": "target", "min": -5}
    with pytest.raises(ConfigError, match=r"model.target_transform: log1p needs a non-negative target; 'y' has min -5"):
        parse_params(negative)
    negative["model"] = {"target_transform": "none"}
    assert parse_params(negative).model.target_transform == "none"


def test_a_validation_batch_too_small_to_be_worth_a_gx_run_names_the_key(tiny_raw):
    tiny_raw["validation"] = {"batch_rows": 10}
    with pytest.raises(ConfigError, match=r"validation.batch_rows: .*1000"):
        parse_params(tiny_raw)


# ------------------------------------------------------------------------------------ issue 19: secrets
SECRET = "S3cretPW"
LOG_URL = f"postgresql://evergreen:{SECRET}@db.example:5432/log"


def _with_secrets(tiny_raw: dict) -> dict:
    tiny_raw["serve"] = {"log_url": LOG_URL}
    tiny_raw["tune"] = {"storage": f"postgresql://tuner:{SECRET}@db.example/study?sslmode=require"}
    return tiny_raw


def test_a_secret_is_masked_in_every_dump_and_revealed_only_on_request(tiny_raw):
    """Regression (issue 19): the whole params object went into model.pt and the card with the password."""
    from evergreen.config import REVEAL

    params = parse_params(_with_secrets(tiny_raw))
    shown = [str(params), repr(params), str(params.model_dump()), params.model_dump_json(),
             str(params.model_dump(mode="json"))]  # fmt: skip
    assert all(SECRET not in text for text in shown)
    assert params.model_dump(mode="json")["serve"]["log_url"] == "postgresql://evergreen:***@db.example:5432/log"
    assert params.serve.log_url.get_secret_value() == LOG_URL  # the edge that connects gets the real value
    assert params.model_dump(mode="json", context=REVEAL)["serve"]["log_url"] == LOG_URL


def test_a_copy_with_overrides_keeps_the_secret_and_its_error_masks_it(tiny_raw):
    from evergreen.config import with_overrides

    params = with_overrides(parse_params(_with_secrets(tiny_raw)), {"split.seed": 7})
    assert params.serve.log_url.get_secret_value() == LOG_URL
    with pytest.raises(ConfigError) as err:
        with_overrides(params, {"tune.storage": f"postgresql://tuner:{SECRET} x@db/study"})
    assert SECRET not in str(err.value) and "tune.storage: the URL holds a space" in str(err.value)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://evergreen:{SECRET} 2@db/log", "the URL holds a space or control character"),
        (f"postgresql://evergreen:{SECRET}%zz@db/log", "the URL holds a % that is not followed by two hex digits"),
        (f"postgresql://evergreen:{SECRET}@[::1/log", "not a valid URL: Invalid IPv6 URL"),
        (f"postgresql://evergreen:{SECRET}@db:99999/log", "not a valid URL: Port out of range"),
        (f"mysql://evergreen:{SECRET}@db/log", "not a PostgreSQL URL"),
    ],
    ids=["space", "bad-escape", "ipv6-unclosed", "port", "not-postgres"],
)
def test_a_malformed_log_url_is_one_line_with_the_password_masked(tmp_path, tiny_raw, url, problem):
    """Regression (issue 19): check-config said ok; the log writer then printed the password or a traceback."""
    from typer.testing import CliRunner

    from evergreen.cli import app
    from evergreen.params_file import dump_plain

    tiny_raw["serve"] = {"log_url": url}
    path = tmp_path / "params.yaml"
    path.write_text(dump_plain(tiny_raw))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    lines = str(err.value).splitlines()
    assert SECRET not in str(err.value) and len(lines) == 2  # the file, then the one problem
    assert lines[1].strip().startswith(f"serve.log_url: {problem}") and ":***@" in lines[1]
    result = CliRunner().invoke(app, ["check-config", "-p", str(path)])
    assert result.exit_code == 1 and SECRET not in result.output and "Traceback" not in result.output
    assert f"serve.log_url: {problem}" in result.output


def test_tune_storage_is_a_url_or_the_name_of_an_environment_variable(tiny_raw):
    tiny_raw["tune"] = {"storage": "EVERGREEN_STUDY_DB"}
    assert parse_params(tiny_raw).tune.storage.get_secret_value() == "EVERGREEN_STUDY_DB"
    tiny_raw["tune"] = {"storage": f"postgresql:/tuner:{SECRET}@db/study"}  # a typo of ://: not a variable name
    with pytest.raises(
        ConfigError, match=r"tune.storage: neither a database URL .* \(got 'postgresql:\*\*\*@db/study'"
    ):
        parse_params(tiny_raw)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"postgresql://u:{SECRET}@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),  # no password: nothing to hide
        (f"postgresql://u:{SECRET}/x@h/db", "postgresql://u:***@h/db"),  # an unescaped / in the password
        (f"postgresql://h/db?user=u&password={SECRET}&sslmode=require", "postgresql://h/db?user=u&password=***&sslmode=require"),
        ("sqlite:///tune/study.db", "sqlite:///tune/study.db"),
    ],
)  # fmt: skip
def test_mask_url_hides_the_password_of_any_form(text, masked):
    from evergreen.config import mask_url

    assert mask_url(text) == masked


def test_a_card_never_holds_a_secret_even_one_written_before_they_were_masked(tiny_raw):
    from evergreen.artifacts.card import ModelCard, redact_card

    old = {"task": "regression", "params": {**tiny_raw, "serve": {"log_url": LOG_URL}, "tune": {"storage": LOG_URL}}}
    assert SECRET not in str(ModelCard.from_dict(old).to_dict())
    assert SECRET not in str(redact_card(old)) and redact_card(old)["task"] == "regression"
    assert old["params"]["serve"]["log_url"] == LOG_URL  # the caller's dict is left as it was


def test_the_backtest_sandbox_never_names_the_projects_secrets(tiny_raw):
    """A sandbox's params.yaml is a file on disk: production's log URL and study storage stay out of it."""
    import datetime as dt

    from evergreen.backtest.sandbox import sandbox_params

    tiny_raw["simulate"] = {"start": "2024-01-10"}
    sandbox = sandbox_params(parse_params(_with_secrets(tiny_raw)), dt.datetime(2024, 3, 1))
    assert sandbox.serve.log_url is None and sandbox.tune.storage is None


# ----------------------------------------------------------------------------------- issue 19: one YAML
def test_a_declared_value_of_another_type_than_its_column_is_named_by_key_path(tiny_raw):
    """Regression (issue 19): `allowed: [No, ...]` read as a bool passed check-config and crashed `clean`."""
    tiny_raw["data"]["columns"].append(
        {"name": "answer", "type": "str", "role": "feature", "allowed": ["maybe", False, True]}
    )
    tiny_raw["data"]["columns"][3]["allowed"] = [1, "two", 3]
    tiny_raw["data"]["columns"][2]["max"] = True
    with pytest.raises(ConfigError) as err:
        parse_params(tiny_raw)
    text = str(err.value)
    assert "data.columns[7].allowed[1]: False is a bool, but column 'answer' has type str" in text
    assert "data.columns[7].allowed[2]: True is a bool" in text
    assert "data.columns[3].allowed[1]: 'two' is a str, but column 'weather' has type int" in text
    assert "data.columns[2].max: a bound is a number" in text
    assert "allowed[0]" not in text


def test_yes_and_no_categories_stay_strings_through_init_the_loader_and_clean(tmp_path):
    """Regression (issue 19): `init` wrote `No` for YAML 1.2, the loader read it as YAML 1.1 (False), and `clean`
    crashed with a polars traceback naming no column."""
    import shutil

    import polars as pl
    from typer.testing import CliRunner

    from evergreen.cli import app
    from evergreen.data.clean import clean
    from evergreen.data.schema import LINEAGE
    from evergreen.params_file import load_plain

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", project / "params.yaml")
    n = 200
    answers = ["No", "Yes", "NO", "y", "Maybe"]  # a category, not a yes/no column: it stays str
    table = pl.DataFrame({
        "answer": [answers[i % 5] for i in range(n)],
        "size": [float(i % 17) for i in range(n)],
        "price": [float(i % 23) * 3.5 + 1 for i in range(n)],
    })  # fmt: skip
    table.write_csv(tmp_path / "houses.csv")
    result = CliRunner().invoke(
        app, ["init", str(tmp_path / "houses.csv"), "--target", "price", "--force", "-p", str(project / "params.yaml")]
    )
    assert result.exit_code == 0, result.output
    params = load_params(project / "params.yaml")
    answer = params.data.column("answer")
    assert answer.type == "str" and sorted(answer.allowed) == sorted(answers)
    # DVC reads the same file with its own YAML: it sees the same strings
    dvc_view = load_plain((project / "params.yaml").read_text())
    assert sorted(next(c for c in dvc_view["data"]["columns"] if c["name"] == "answer")["allowed"]) == sorted(answers)
    raw = table.with_columns(pl.all().cast(pl.String), pl.lit("houses.csv").alias(LINEAGE[0]))
    raw = raw.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINEAGE[1]))
    cleaned = clean(raw.select([*params.data.names, *LINEAGE]), params.data, params.clean)
    assert cleaned.quarantine.height == 0
    assert sorted(cleaned.clean["answer"].unique().to_list()) == sorted(answers)


def test_set_values_are_read_with_the_yaml_of_params_yaml():
    """`evergreen run -S` values are YAML 1.2 like params.yaml and `dvc exp run -S`: `No` is text, 1e-3 a number."""
    from evergreen.orchestration.summary import parse_overrides

    assert parse_overrides(["a=No", "b=y", "train.lr=1e-3", "c=[1, on]"]) == {
        "a": "No", "b": "y", "train.lr": 0.001, "c": [1, "on"]
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"--set 'a=\[1,': the value is not YAML"):
        parse_overrides(["a=[1,"])


def test_a_round_trip_write_quotes_what_a_yaml_11_reader_would_take_for_a_bool(tmp_path):
    """Any YAML 1.1 tool reading params.yaml (PyYAML) sees the strings `init` and the loader see."""
    import yaml

    from evergreen.params_file import dump_round_trip, load_plain, override_text

    values = ["No", "Yes", "NO", "y", "on", "Off", "maybe"]
    text = dump_round_trip({"data": {"allowed": values}, "train": {"lr": 0.003}})
    assert yaml.safe_load(text)["data"]["allowed"] == values == load_plain(text)["data"]["allowed"]
    edited = override_text(text, {"train.lr": 1e-06, "data.allowed": ["n", "N"]})
    assert yaml.safe_load(edited) == load_plain(edited) == {"data": {"allowed": ["n", "N"]}, "train": {"lr": 1e-06}}
