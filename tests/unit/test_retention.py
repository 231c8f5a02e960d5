"""Retention (issue 19): the prediction log forgets rows past `serve.log_retention_days` and one id's rows on
request (`evergreen forget`), on either backend; the registry keeps the files of `promote.keep_versions`
versions plus those that may serve again; `/health` tells a caller without the token its status only."""

from __future__ import annotations

import copy
import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from evergreen.cli import app
from evergreen.config import parse_params
from evergreen.errors import EvergreenError, RegistryError
from evergreen.prediction_log.read import read_log
from evergreen.prediction_log.retention import delete_older_than, forget_id
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.privacy import Redactor
from evergreen.registry.store import CARD, FILES_REMOVED, Registry
from evergreen.workspace import LogLocation, Workspace

KEY = "test-pii-key-0123456789"
NOW = dt.datetime(2026, 6, 30, 12, 0)
_DATABASES = iter(range(10**6))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def location(request, tmp_path: Path) -> LogLocation:
    if request.param == "sqlite":
        return LogLocation.sqlite(tmp_path / "predictions.db")
    url = request.getfixturevalue("postgres").create_database(f"keep_{os.getpid()}_{next(_DATABASES)}")
    return LogLocation.postgresql(url)


def _stamp(days_ago: float) -> str:
    return (NOW - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write(location: LogLocation, data: Any, requests: list[tuple[str, float, list[Any]]]) -> None:
    """One request per (request id, age in days, ids of its records), each with a shadow answer per record."""
    log = PredictionLog(location, timeout_s=5)
    try:
        for request_id, days_ago, ids in requests:
            records = [{"id": i, "day": "2024-01-01", "hr": 1, "weather": 1, "temp": 0.5, "hum": 0.5} for i in ids]
            rows = log_rows(request_id, _stamp(days_ago), "v1", records, [1.0] * len(ids), redactor=Redactor(data))
            shadow = [(request_id, i, "v2", 2.0, None) for i in range(len(ids))]
            log.write(rows, shadow_rows=shadow)
        log.attach_labels(requests[0][0], [5] * len(requests[0][2]))
    finally:
        log.close()


def _shadow_rows(location: LogLocation) -> int:
    query = "SELECT count(*) FROM shadow_predictions"
    if location.path is not None:
        with sqlite3.connect(location.path) as conn:
            return conn.execute(query).fetchone()[0]
    import psycopg

    with psycopg.connect(location.secret_url()) as conn:
        return conn.execute(query).fetchone()[0]


def test_rows_past_the_retention_go_with_their_labels_and_shadow_answers(tiny, location):
    """Promise: predictions scored more than N days ago are deleted, with their labels and shadow answers, on
    either backend; newer ones stay. Before: the log only grew."""
    _write(location, tiny.data, [("old", 40, [1, 2]), ("edge", 29.9, [3]), ("new", 1, [4])])
    deleted = delete_older_than(location, 30, now=NOW)
    assert (deleted.predictions, deleted.shadow) == (2, 2)
    assert read_log(location)["request_id"].to_list() == ["edge", "new"]
    assert read_log(location)["label"].null_count() == 2 and _shadow_rows(location) == 2
    assert delete_older_than(location, 30, now=NOW).predictions == 0  # nothing more to delete


def test_forget_removes_one_ids_rows_and_finds_a_hashed_id_by_its_hash(tiny_raw, location, monkeypatch):
    """Promise: forgetting an id removes every prediction of that id (and its shadow answers), and where the id
    column is `pii: hash` it finds them by the keyed hash of the value typed."""
    monkeypatch.setenv("EVERGREEN_PII_KEY", KEY)
    tiny_raw["data"]["columns"][0] = {"name": "id", "type": "str", "role": "id", "pii": "hash"}
    data = parse_params(tiny_raw).data
    _write(location, data, [("a", 1, ["alice@example.org", "bob@example.org"]), ("b", 1, ["alice@example.org"])])
    deleted = forget_id(location, data, "alice@example.org")
    assert (deleted.predictions, deleted.shadow) == (2, 2)
    assert read_log(location)["row"].to_list() == [1] and _shadow_rows(location) == 1
    assert forget_id(location, data, "nobody@example.org").predictions == 0


def test_forget_types_the_id_as_declared_and_refuses_one_of_another_type(tiny, tmp_path):
    log = LogLocation.sqlite(tmp_path / "predictions.db")
    _write(log, tiny.data, [("a", 1, [17, 18]), ("b", 1, [17])])
    assert forget_id(log, tiny.data, "17").predictions == 2  # logged as the int 17
    with pytest.raises(EvergreenError, match="the id column 'id' is of type int"):
        forget_id(log, tiny.data, "seventeen")
    assert forget_id(LogLocation.sqlite(tmp_path / "never-served.db"), tiny.data, "17").predictions == 0


def _project(tmp_path: Path, tiny_raw: dict[str, Any], **serve: Any) -> Workspace:
    raw = copy.deepcopy(tiny_raw)
    raw["serve"] = serve
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return Workspace.open(tmp_path)


def test_the_forget_command_says_how_many_rows_it_removed_and_never_echoes_the_id(tmp_path, tiny_raw):
    ws = _project(tmp_path, tiny_raw)
    _write(ws.prediction_log_location, ws.params.data, [("a", 1, [424242, 7]), ("b", 1, [424242])])
    params = str(tmp_path / "params.yaml")
    done = CliRunner().invoke(app, ["forget", "--id", "424242", "-p", params])
    assert done.exit_code == 0, done.output
    assert "removed 2 prediction(s)" in done.output and "424242" not in done.output
    refused = CliRunner().invoke(app, ["forget", "--id", "x1", "-p", params])
    assert refused.exit_code == 1 and "of type int" in refused.output


def test_evergreen_monitor_applies_the_log_retention_first(tmp_path, tiny_raw):
    """Promise: `evergreen monitor` deletes what is past `serve.log_retention_days` before it reads a window
    (here it then stops: there is no champion to monitor)."""
    ws = _project(tmp_path, tiny_raw, log_retention_days=7)
    _write(ws.prediction_log_location, ws.params.data, [("old", 3650, [1]), ("new", -3650, [2])])
    done = CliRunner().invoke(app, ["monitor", "-p", str(tmp_path / "params.yaml")])
    assert "no champion" in done.output
    assert read_log(ws.prediction_log_location)["request_id"].to_list() == ["new"]


# --------------------------------------------------------------------------------------------- registry
def _registry(tmp_path: Path, versions: int, keep: int | None = None) -> Registry:
    registry = Registry(tmp_path / "registry", keep_versions=keep)
    for i in range(versions):
        model = tmp_path / f"model-{i}.onnx"
        model.write_bytes(f"graph {i}".encode())
        registry.add({"model.onnx": model, "signature.json": model}, {"note": i})
    return registry


def test_keep_versions_keeps_the_newest_the_champion_its_fallback_and_the_shadow(tmp_path):
    """Promise: after a promotion with `promote.keep_versions: 2`, only the newest two versions, the champion,
    the previous champion (the fallback) and the shadow keep their files; every card stays, so the history
    reads; a pruned version cannot serve again, and the error names it. Before: versions piled up for ever."""
    registry = _registry(tmp_path, 8)
    for version in ("v1", "v2", "v3"):
        registry.promote(version, "test")
    registry.set_shadow("v4", "test")
    kept = Registry(registry.root, keep_versions=2)
    kept.promote("v5", "test")  # champion v5, fallback v3, shadow v4, newest v7 and v8
    with_files = [v for v in kept.versions() if (kept.root / v / "model.onnx").exists()]
    assert with_files == ["v3", "v4", "v5", "v7", "v8"]
    assert kept.versions() == [f"v{i}" for i in range(1, 9)]  # every card is still there
    assert [p.name for p in (kept.root / "v1").iterdir()] == [CARD] and FILES_REMOVED in kept.card("v1")
    assert kept.card("v2")["note"] == 1
    with pytest.raises(
        RegistryError, match=r"cannot make v2 the champion: the files of v2 were removed .*promote.keep_versions: 2"
    ):
        kept.promote("v2", "by hand")
    assert kept.champion() == "v5"


def test_a_rollback_to_a_pruned_version_is_refused_naming_it(tmp_path):
    registry = _registry(tmp_path, 4)
    for version in ("v1", "v2", "v3"):
        registry.promote(version, "test")
    assert registry.prune(1) == ["v1"]  # v4 newest, v3 champion, v2 its fallback
    registry.rollback()  # to v2: its fallback is now v1, whose files are gone
    with pytest.raises(RegistryError, match="cannot roll back to v1: the files of v1 were removed"):
        registry.rollback()
    assert registry.champion() == "v2"


def test_without_keep_versions_nothing_is_removed(tmp_path):
    registry = _registry(tmp_path, 5)
    for version in ("v1", "v2", "v3", "v4", "v5"):
        registry.promote(version, "test")
    assert all((registry.root / v / "model.onnx").exists() for v in registry.versions())
