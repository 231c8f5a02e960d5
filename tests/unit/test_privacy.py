"""Personal data (issue 19): a column declared `pii: hash` or `pii: drop` is never stored in clear in the
prediction log (either backend) or validation's example values and Data Docs, and files follow the umask."""

from __future__ import annotations

import copy
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from evergreen.config import parse_params
from evergreen.errors import ConfigError, PiiKeyMissing
from evergreen.prediction_log.base import utc_now
from evergreen.prediction_log.read import read_log
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.privacy import Redactor, hash_value, without_personal
from evergreen.workspace import LogLocation

KEY = "test-pii-key-0123456789"
EMAIL = "alice.smith@example.org"


def _declared(raw: dict[str, Any], **pii: Any) -> Any:
    raw = copy.deepcopy(raw)
    for column in raw["data"]["columns"]:
        if column["name"] in pii:
            column["pii"] = pii[column["name"]]
    return parse_params(raw)


def test_pii_true_means_hash_and_undeclared_columns_dump_as_before(tiny_raw):
    params = _declared(tiny_raw, id=True, hum="drop")
    assert params.data.column("id").pii == "hash" and params.data.column("hum").pii == "drop"
    # the clean partitions' fingerprint is a dump of the columns: an undeclared pii must not change it
    assert "pii" not in params.data.column("hr").model_dump(mode="json")
    assert params.data.pii_key_env == "EVERGREEN_PII_KEY"


def test_pii_on_the_target_or_the_timestamp_is_refused_naming_the_column(tiny_raw):
    with pytest.raises(ConfigError, match="column 'y': pii cannot be declared on the target"):
        _declared(tiny_raw, y="hash")
    with pytest.raises(ConfigError, match="column 'day': pii cannot"):
        _declared(tiny_raw, day="drop")
    with pytest.raises(ConfigError, match="pii"):
        _declared(tiny_raw, hr="maybe")


def test_a_hashed_column_without_its_key_is_an_error_naming_the_variable(tiny_raw, monkeypatch):
    monkeypatch.delenv("EVERGREEN_PII_KEY", raising=False)
    data = _declared(tiny_raw, id="hash").data
    with pytest.raises(PiiKeyMissing, match="EVERGREEN_PII_KEY"):
        Redactor(data)
    assert Redactor(_declared(tiny_raw, hum="drop").data).dropped == ["hum"]  # dropping needs no key


def test_the_keyed_hash_depends_on_the_key_and_types_an_id_alike(monkeypatch):
    assert hash_value(17, b"k") == hash_value("17", b"k")  # logged as 17, typed as "17" to `forget`
    assert hash_value(EMAIL, b"k") != hash_value(EMAIL, b"other")
    assert EMAIL not in hash_value(EMAIL, b"k") and hash_value(EMAIL, b"k").startswith("hmac-sha256:")


_DATABASES = iter(range(10**6))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def location(request, tmp_path: Path) -> LogLocation:
    if request.param == "sqlite":
        return LogLocation.sqlite(tmp_path / "predictions.db")
    url = request.getfixturevalue("postgres").create_database(f"pii_{os.getpid()}_{next(_DATABASES)}")
    return LogLocation.postgresql(url)


def _stored_features(location: LogLocation) -> list[str]:
    """The log's `features` column as stored, read with the database's own client."""
    if location.path is not None:
        with sqlite3.connect(location.path) as conn:
            return [row[0] for row in conn.execute("SELECT features FROM predictions ORDER BY seq")]
    import psycopg

    with psycopg.connect(location.secret_url()) as conn:
        return [row[0] for row in conn.execute("SELECT features FROM predictions ORDER BY seq")]


def test_the_log_stores_a_hashed_id_and_no_dropped_feature_on_either_backend(tiny_raw, location, monkeypatch):
    """Promise: what the log stores of a `pii: hash` column is its keyed hash, and of a `pii: drop` one nothing;
    `read_log` reads the hash as text. Before: the record went to the log as it came."""
    monkeypatch.setenv("EVERGREEN_PII_KEY", KEY)
    tiny_raw["data"]["columns"][0] = {"name": "id", "type": "str", "role": "id", "pii": "hash"}
    data = _declared(tiny_raw, temp="drop").data
    records = [{"id": EMAIL, "day": "2024-01-01", "hr": 3, "weather": 1, "temp": 0.123456, "hum": 0.5}]
    log = PredictionLog(location, timeout_s=5)
    try:
        log.write(log_rows("r1", utc_now(), "v1", records, [4.0], redactor=Redactor(data)))
    finally:
        log.close()
    [stored] = _stored_features(location)
    assert EMAIL not in stored and "0.123456" not in stored and "temp" not in stored
    assert json.loads(stored)["id"] == hash_value(EMAIL, KEY.encode())
    frame = read_log(location, data=data)
    assert frame["id"].to_list() == [hash_value(EMAIL, KEY.encode())] and "temp" not in frame.columns
    assert frame["hr"].to_list() == [3]


def test_monitoring_judges_and_shows_no_personal_column(tiny_raw):
    data = without_personal(_declared(tiny_raw, hum="drop", hr="hash").data)
    assert [c.name for c in data.features] == ["weather", "temp"]


def _frame() -> pl.DataFrame:
    return pl.DataFrame({"email": [EMAIL, "bob@example.org", "ok"], "n": [1, 2, 987654]})


@pytest.mark.parametrize(
    "condition", [{}, {"row_condition": "n > 0", "condition_parser": "pandas"}], ids=["plain", "row-condition"]
)
def test_validation_shows_no_failing_value_of_a_personal_column_in_reports_or_data_docs(tmp_path, condition):
    """Promise: a failed expectation on a personal column gives its count, never its values, in the summary
    (the JSON report and the error message) and in GX's Data Docs; other columns keep their examples.
    Before: `partial_unexpected_list` copied the e-mail addresses into both. A row condition (which runs the
    expectation on the whole frame, not on its column's) keeps the promise too."""
    from evergreen.validation.gx_adapter import validate_frame

    lengths = {"column": "email", "max_value": 3, **condition}
    suite = {
        "name": "raw",
        "expectations": [
            {"type": "expect_column_value_lengths_to_be_between", "kwargs": lengths},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "max_value": 10}},
        ],
    }
    summary = validate_frame(_frame(), suite, docs_dir=tmp_path / "docs", personal={"email"})
    outcomes = {o.column: o for o in summary.outcomes}
    assert not summary.success and summary.suite_name == "raw"
    assert outcomes["email"].unexpected_count == 2 and outcomes["email"].example_values == []
    assert outcomes["n"].example_values == [987654]  # not personal: shown as before
    docs = "".join(p.read_text(errors="ignore") for p in (tmp_path / "docs").rglob("*.html"))
    assert "987654" in docs and "alice.smith" not in docs and "bob@example" not in docs


def test_files_written_atomically_follow_the_umask(tmp_path):
    """Promise: under a umask of 0o002, the champion pointer, a manifest and a data part are group-readable
    (and writable), as a plain `open` makes them. Before: mkstemp made them 0600, unreadable by a service
    running as another account of the group."""
    from evergreen.data import io
    from evergreen.data.partitions import write_manifest
    from evergreen.registry.store import CHAMPION, Registry

    old = os.umask(0o002)
    try:
        io.write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "data" / "part-0.parquet")
        write_manifest([], tmp_path / "data" / "manifest.json")
        registry = Registry(tmp_path / "registry")
        (tmp_path / "model.onnx").write_bytes(b"graph")
        registry.promote(registry.add({"model.onnx": tmp_path / "model.onnx"}, {}), "test")
    finally:
        os.umask(old)
    for path in (tmp_path / "data" / "part-0.parquet", tmp_path / "data" / "manifest.json"):
        assert path.stat().st_mode & 0o777 == 0o664, path
    assert (tmp_path / "registry" / CHAMPION).stat().st_mode & 0o777 == 0o664


def test_init_proposes_pii_hash_for_columns_named_like_personal_data_and_says_so():
    """Promise: `evergreen init` declares an id or feature whose name looks personal `pii: hash`, with the reason;
    a name that merely contains such a word (hostname) is left alone."""
    from evergreen.declare.infer import infer

    frame = pl.DataFrame(
        {
            "customer_email": [f"user{i}@example.org" for i in range(200)],
            "phone_number": [f"+44 20 {i:04d}" for i in range(100)] * 2,
            "hostname": ["a", "b"] * 100,
            "y": list(range(200)),
        }
    )
    columns = {c.name: c for c in infer(frame, "y").columns}
    assert (
        columns["customer_email"].declaration["pii"] == "hash" and "looks personal" in columns["customer_email"].reason
    )
    assert columns["phone_number"].role == "feature" and columns["phone_number"].declaration["pii"] == "hash"
    assert "pii" not in columns["hostname"].declaration and "pii" not in columns["y"].declaration


def test_feedback_never_lands_a_hash_or_a_gap_as_a_training_value(tiny_raw, tmp_path, monkeypatch):
    """Promise: labelled predictions land as training rows without the log's stand-ins for personal columns: a
    hashed feature lands empty (then `clean`'s missing policy applies), and a row keyed by a hashed id counts as
    without id. Before: the hash landed as the feature's value and as the row's id."""
    from evergreen.monitoring.feedback import feedback_batch

    monkeypatch.setenv("EVERGREEN_PII_KEY", KEY)
    records = [{"id": 7, "day": "2024-01-01", "hr": 3, "weather": 1, "temp": 0.25, "hum": 0.5}]

    def landed(data: Any) -> Any:
        location = LogLocation.sqlite(tmp_path / f"log-{len(list(tmp_path.iterdir()))}.db")
        log = PredictionLog(location, timeout_s=5)
        try:
            log.write(log_rows("r1", utc_now(), "v1", records, [4.0], redactor=Redactor(data)))
            assert log.attach_labels("r1", [5]) == 1
        finally:
            log.close()
        return feedback_batch(read_log(location, data=data), data, after=None)

    batch = landed(_declared(tiny_raw, weather="hash").data)
    assert batch.without_id == 0 and batch.rows.height == 1
    row = batch.rows.row(0, named=True)
    assert row["weather"] is None and row["temp"] == "0.25" and row["id"] == "7" and row["y"] == "5"
    keyed_by_hash = landed(_declared(tiny_raw, id="hash").data)
    assert keyed_by_hash.without_id == 1 and keyed_by_hash.rows.height == 0
