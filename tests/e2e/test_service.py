"""The prediction service for real: `evergreen serve` in a subprocess on a free loopback port, a model
trained, evaluated and exported by the real stages on tiny synthetic data, a real registry and a real log.

Covers: no train/serve skew (served == evaluate stage == `evergreen predict`), the API token, bad input,
many parallel clients logged exactly once, a promotion under load, feedback, and batch scoring. `kill -9` and
the other attacks on the service are in `tests/faults/test_service_*.py`, which reuse these helpers.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import yaml

from evergreen.prediction_log.read import read_log
from tests.harness import free_port, wait_until
from tests.service_harness import (
    AUTH,
    BIN,
    COLUMNS,
    MAX_BATCH,
    TOKEN,
    Project,
    build_project,
    load_clients,
    running_server,
    server_env,
    wait_for_health,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_project(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="module")
def url(project: Project) -> Iterator[str]:
    with running_server(project.root) as (base, _):
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        yield client


def _logged(project: Project, version: str | None = None) -> int:
    """Rows in the log (scored by `version`, when given)."""
    log = read_log(project.log_location)
    return log.height if version is None else log.filter(pl.col("model_version") == version).height


def _predict(client: httpx.Client, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/predict", json={"records": records})
    assert response.status_code == 200, response.text
    return response.json()


def _wait_for_version(client: httpx.Client, version: str) -> None:
    wait_for_health(client, lambda health: health["model_version"] == version, f"the service to switch to {version}")


# ------------------------------------------------------------------------------------------------- tests
def test_served_predictions_equal_the_evaluate_stages(project, client):
    records = project.records()
    served: list[float] = []
    for start in range(0, len(records), MAX_BATCH):
        answer = _predict(client, records[start : start + MAX_BATCH])
        assert answer["model_version"] == "v1" and len(answer["request_id"]) == 32
        served += answer["predictions"]
    # the same rows through torch (evaluate) and through the served graph: equal within the export gate
    np.testing.assert_allclose(served, project.evaluated, rtol=0, atol=project.parity_limit)
    assert np.abs(np.array(served) - project.evaluated).max() < 1e-3 * np.abs(project.evaluated).mean()


def test_health_is_public_and_model_tells_version_and_card(project, url, client):
    # without the token, only the status (issue 19); with it, the rest
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert client.get("/health").json() == {
        "status": "ok",
        "model_version": "v1",
        "log": "ok",
        "log_backend": "sqlite",
    }
    info = client.get("/model").json()
    assert info["version"] == "v1" and info["features"] == ["hr", "weather", "temp", "hum"]
    assert info["card"]["metrics"]["model"]["rmse"] > 0 and info["card"]["version"] == "v1"
    assert set(info["request_schema"]["items"]["properties"]) == set(COLUMNS)


def test_a_missing_or_wrong_token_is_a_401_and_nothing_is_logged(project, url):
    before = _logged(project)
    body = {"records": project.records()[:2]}
    wrong = ["Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"]
    for headers in [{}, *({"Authorization": value} for value in wrong)]:
        response = httpx.post(f"{url}/predict", json=body, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["error"]
        assert httpx.get(f"{url}/model", headers=headers).status_code == 401
    assert httpx.post(f"{url}/feedback", json={"request_id": "x", "labels": [1]}).status_code == 401
    assert _logged(project) == before
    assert httpx.post(f"{url}/predict", json=body, headers=AUTH).status_code == 200


def test_a_public_address_without_a_token_refuses_to_start(project):
    done = subprocess.run(
        [str(BIN / "evergreen"), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=project.root,
        env=server_env(token=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "EVERGREEN_API_TOKEN" in done.stderr and "0.0.0.0" in done.stderr


def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(project, client):
    good = project.records()[0]
    before = _logged(project)
    cases: list[tuple[bytes, int, str]] = [
        (b'{"records": [', 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 422, "records"),
        (json.dumps({"records": [good], "extra": 1}).encode(), 422, "extra"),
        (json.dumps({"records": [{**good, "hr": "7"}]}).encode(), 422, "records[0].hr"),
        (json.dumps({"records": [{**good, "temp": None}]}).encode(), 422, "records[0].temp"),
        (json.dumps({"records": [good, {**good, "temp": float("nan")}]}).encode(), 422, "records[1].temp"),
        (json.dumps({"records": [{**good, "hum": float("inf")}]}).encode(), 422, "records[0].hum"),
        (json.dumps({"records": [{**good, "id": "x" * 33}]}).encode(), 422, "records[0].id"),
        (json.dumps({"records": [{**good, "wind": 3}]}).encode(), 422, "records[0].wind"),
        (
            json.dumps({"records": [{k: v for k, v in good.items() if k != "hr"}]}).encode(),
            422,
            "records[0].hr",
        ),
        (json.dumps({"records": []}).encode(), 422, "records"),
        (json.dumps({"records": [good] * (MAX_BATCH + 1)}).encode(), 413, f"at most {MAX_BATCH}"),
        (b'{"records": ["' + b"x" * 10_000_000 + b'"]}', 413, "bytes"),
    ]
    for body, status, needle in cases:
        response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, (body[:80], response.text[:300])
        assert needle in response.text, (needle, response.text[:300])
        assert len(response.content) < 5000  # the input is never echoed back
    assert _logged(project) == before
    assert client.get("/health").json()["status"] == "ok"
    assert len(_predict(client, [good])["predictions"]) == 1


def _expected(project: Project, records: list[dict[str, Any]], version: str) -> np.ndarray:
    index = {r["id"]: i for i, r in enumerate(project.records())}
    base = project.evaluated[[index[r["id"]] for r in records]]
    return base * (2 if version == "v2" else 1)


def test_parallel_clients_are_each_logged_exactly_once(project, url):
    *per_client, [(_, failures)] = load_clients(url, project.records(), clients=16, requests=25)
    assert failures == []
    answers = [answer for client in per_client for _, answer in client]
    assert len(answers) == 16 * 25
    log = read_log(project.log_location)
    counts = dict(log.group_by("request_id").len().iter_rows())
    assert log.select("request_id", "row").is_unique().all()
    for batch, answer in (pair for client in per_client for pair in client):
        assert counts[answer["request_id"]] == len(batch)
        rows = log.filter(pl.col("request_id") == answer["request_id"]).sort("row")
        assert rows["prediction"].to_list() == answer["predictions"]
        assert rows["id"].to_list() == [r["id"] for r in batch]


def test_a_promotion_under_load_fails_no_request(project, url, client):
    stop = threading.Event()
    outcome: list[list[tuple]] = []
    loader = threading.Thread(
        target=lambda: outcome.extend(load_clients(url, project.records(), clients=8, requests=None, stop=stop))
    )
    before, v2_before = _logged(project), _logged(project, "v2")
    loader.start()
    try:
        # under load for real before the switch, and still under load well after it: 100 rows each way
        wait_until(lambda: _logged(project) >= before + 100, 30, "100 rows logged under load", interval=0.05)
        project.registry.promote("v2", "test: promotion under load")
        _wait_for_version(client, "v2")
        wait_until(lambda: _logged(project, "v2") >= v2_before + 100, 30, "100 rows served by v2", interval=0.05)
    finally:
        stop.set()
        loader.join()
        project.registry.promote("v1", "test: back to the first champion")
    *per_client, [(_, failures)] = outcome
    assert failures == []
    seen = set()
    for pairs in per_client:
        versions = [answer["model_version"] for _, answer in pairs]
        assert set(versions) <= {"v1", "v2"}
        assert versions == sorted(versions)  # a client never goes back to the old version after the switch
        seen |= set(versions)
        for batch, answer in pairs:  # a whole request is served by the version it names
            expected = _expected(project, batch, answer["model_version"])
            np.testing.assert_allclose(answer["predictions"], expected, rtol=0, atol=2 * project.parity_limit)
    assert seen == {"v1", "v2"}
    _wait_for_version(client, "v1")


def test_a_champion_that_cannot_load_is_skipped_and_the_old_one_keeps_serving(project, client, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    signature = project.workspace.signature
    version = project.registry.add({"model.onnx": broken, "signature.json": signature}, {"note": "broken"})
    project.registry.promote(version, "test: a broken champion")
    try:
        # the watcher tried and gave up
        health = wait_for_health(client, lambda health: "fallback" in health, f"the service to give up on {version}")
        assert health["model_version"] == "v1" and health["status"] == "degraded"
        assert health["fallback"]["wanted"] == version and health["fallback"]["serving"] == "v1"
        answer = _predict(client, project.records()[:1])
        assert answer["model_version"] == "v1"
    finally:
        project.registry.promote("v1", "test: back to the first champion")


def test_serve_without_a_champion_refuses_to_start(project, tmp_path):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["promote"] = {"registry_dir": str(tmp_path / "empty")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [
            str(BIN / "evergreen"),
            "serve",
            "--params",
            str(tmp_path / "params.yaml"),
            "--port",
            str(free_port()),
        ],
        cwd=project.root,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "no champion" in done.stderr


def test_feedback_attaches_labels_to_an_earlier_request(project, client):
    records = project.records()[:3]
    request_id = _predict(client, records)["request_id"]
    labels = project.test["y"][:3].to_list()
    response = client.post("/feedback", json={"request_id": request_id, "labels": labels})
    assert response.status_code == 200 and response.json() == {"request_id": request_id, "labelled": 3}
    log = read_log(project.log_location).filter(pl.col("request_id") == request_id).sort("row")
    assert log["label"].to_list() == labels and log["label_time"].null_count() == 0
    assert client.post("/feedback", json={"request_id": "unknown", "labels": [1]}).status_code == 404
    wrong_count = client.post("/feedback", json={"request_id": request_id, "labels": [1]})
    assert wrong_count.status_code == 422 and "3 record" in wrong_count.text
    bad_label = client.post("/feedback", json={"request_id": request_id, "labels": [1, "x", 2]})
    assert bad_label.status_code == 422 and "labels[1]" in bad_label.text


def test_batch_scoring_matches_the_service(project, client, tmp_path):
    frame = project.test.with_columns(pl.col("day").cast(pl.String)).select(*COLUMNS, "y")
    dirty = frame.head(4).with_columns(
        hr=pl.Series(["x", "30", "5", "6"]).cast(pl.String),
        temp=pl.Series([0.5, 0.5, None, 0.5]).cast(pl.String),
    )
    table = pl.concat([frame.cast(pl.String), dirty.cast(pl.String)])
    table.write_csv(tmp_path / "in.csv")
    command = ["predict", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet")]
    done = subprocess.run(
        [str(BIN / "evergreen"), *command], cwd=project.root, env=server_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "scored 152 of 154 rows with v1" in done.stdout
    scored = pl.read_parquet(tmp_path / "out.parquet")
    quarantined = pl.read_parquet(tmp_path / "out.quarantine.parquet")
    assert quarantined["_source_row"].to_list() == [151, 153]
    assert quarantined["_reason"].to_list() == ["unparseable:hr", "missing:temp"]
    assert scored.height + quarantined.height == table.height
    assert set(scored["model_version"]) == {"v1"}
    # the same rows, served: the same graph and the same feature matrix, so the same numbers
    np.testing.assert_allclose(scored["prediction"][:150].to_numpy(), project.evaluated, atol=project.parity_limit)
    served = _predict(client, project.records()[:MAX_BATCH])["predictions"]
    np.testing.assert_allclose(scored["prediction"][:MAX_BATCH].to_numpy(), served, rtol=1e-6)
    out_of_range = scored.filter(pl.col("_source_row") == 152)
    assert out_of_range["hr"].to_list() == [30]  # scored as it is, like the service does
