"""The service and personal data (issue 19): a `pii` column is scored as sent but logged hashed or not at all;
a hashed column without its key stops the start; `/health` shows nothing internal to a caller without the token.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from fastapi.testclient import TestClient

from evergreen.errors import PiiKeyMissing
from evergreen.privacy import hash_value
from evergreen.serving.app import create_app
from evergreen.serving.service import PredictionService
from tests.service_harness import AUTH, TOKEN

pytestmark = [pytest.mark.slow]

KEY = "test-pii-key-0123456789"


def _personal(ws_params, **pii: str) -> list[dict]:
    columns = [c.model_dump(mode="json") for c in ws_params.data.columns]
    return [{**c, "pii": pii[c["name"]]} if c["name"] in pii else c for c in columns]


def test_the_service_logs_a_personal_id_hashed_and_a_dropped_feature_not_at_all(make_project, trained, monkeypatch):
    """Promise: the answers are those of the same model without declarations (the model sees the values), but
    the log holds the id's keyed hash and no `hum` at all. Before: the log held every record as sent."""
    monkeypatch.setenv("EVERGREEN_PII_KEY", KEY)
    records = trained.records()[:3]
    plain = make_project()
    with PredictionService(plain) as service:
        expected = service.predict({"records": records})["predictions"]
    ws = make_project({"data.columns": _personal(plain.params, id="hash", hum="drop")})
    with PredictionService(ws) as service:
        assert service.predict({"records": records})["predictions"] == expected
    with sqlite3.connect(ws.prediction_log) as conn:
        stored = [json.loads(row[0]) for row in conn.execute("SELECT features FROM predictions ORDER BY seq")]
    assert [r["id"] for r in stored] == [hash_value(r["id"], KEY.encode()) for r in records]
    assert all("hum" not in r for r in stored) and all(r["hr"] == s["hr"] for r, s in zip(records, stored, strict=True))


def test_a_hashed_column_without_its_key_stops_the_start_naming_the_variable(make_project, monkeypatch):
    monkeypatch.delenv("EVERGREEN_PII_KEY", raising=False)
    plain = make_project()
    ws = make_project({"data.columns": _personal(plain.params, id="hash")})
    with pytest.raises(PiiKeyMissing, match="environment variable EVERGREEN_PII_KEY"):
        PredictionService(ws)
    assert not ws.prediction_log.exists()  # stopped before opening anything


def test_health_without_the_token_tells_the_status_only(make_project, monkeypatch):
    """Promise: with the log down, a caller without the token gets `{"status": "degraded"}` (503) and nothing
    of the log's location; with the token, the reason (the log's path). Before: anyone saw the absolute path
    (or the database's user@host:port/db)."""
    monkeypatch.setenv("EVERGREEN_API_TOKEN", TOKEN)
    ws = make_project({"serve.log_timeout_s": 0.5})
    with TestClient(create_app(ws)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        locker = sqlite3.connect(ws.prediction_log, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            public = client.get("/health")
            private = client.get("/health", headers=AUTH)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    assert public.status_code == 503 and public.json() == {"status": "degraded"}
    assert str(ws.root) not in public.text
    assert private.status_code == 503 and str(ws.prediction_log) in private.json()["log_error"]
