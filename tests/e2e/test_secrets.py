"""Secrets stay where they were put (issue 19): a password in `serve.log_url` and `tune.storage` is in
params.yaml and nowhere else. The real pipeline runs on a thinned copy of the bundled data, the real service
logs to a real PostgreSQL through the URL with the password, and every file the project folder then holds
(binary too: model.pt, ONNX, parquet, SQLite, JSON, HTML), every endpoint's answer and the CLI's outputs are
searched for the password.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import polars as pl
import pytest

from evergreen.config import load_params
from evergreen.data.schema import request_columns
from evergreen.orchestration.overrides import apply_overrides
from tests.service_harness import AUTH, running_server

from .workspace import FAST_TRAINING

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "S3cretPW"
SOURCE = Path("data/source/bike-sharing/hour.csv")


def _thin_source(project: Path, every: int = 6) -> None:
    """Every `every`-th row of the bundled table: the same dates (the split's cut points hold), a sixth of it."""
    lines = (project / SOURCE).read_text().splitlines(keepends=True)
    (project / SOURCE).write_text("".join([lines[0], *lines[1::every]]))


def _holding_the_password(project: Path) -> list[str]:
    """Files under the project, other than params.yaml where the password was put, whose bytes hold it."""
    needle = PASSWORD.encode()
    return sorted(
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file() and path != project / "params.yaml" and needle in path.read_bytes()
    )


def _records(project: Path, n: int = 5) -> list[dict]:
    """Real test rows with the request's fields, dates as ISO text (as a client sends them)."""
    features, annotations = request_columns(load_params(project / "params.yaml").data)
    rows = pl.read_parquet(project / "data/split/test.parquet").head(n)
    return json.loads(rows.select([c.name for c in [*features, *annotations]]).write_json())


def test_a_password_in_params_reaches_no_artefact_answer_or_output(project, run, postgres):
    # the cluster trusts local connections: the password is sent and ignored, as a real one would be checked
    log_url = postgres.create_database("secret_log").replace("@", f":{PASSWORD}@", 1)
    _thin_source(project)
    apply_overrides(
        project / "params.yaml",
        {
            **FAST_TRAINING,
            "serve.log_url": log_url,
            # never connected to by the pipeline: port 1 refuses at once if anything tried
            "tune.storage": f"postgresql://tuner:{PASSWORD}@127.0.0.1:1/study",
        },
    )
    outputs = [run("dvc", "repro").stdout]
    assert json.loads((project / "metrics/promotion.json").read_text())["promoted"]

    outputs += [run("evergreen", "check-config").stdout, run("evergreen", "models", "show", "v1").stdout,
                run("evergreen", "models", "list").stdout]  # fmt: skip
    card = json.loads(outputs[2])
    assert ":***@127.0.0.1:" in card["params"]["serve"]["log_url"]  # masked, not dropped
    tune = run("evergreen", "tune", "--trials", "1", check=False)  # the storage refuses: the message masks it
    assert tune.returncode == 1 and "tuner:***@127.0.0.1:1" in tune.stdout, tune.stdout
    outputs.append(tune.stdout)

    with running_server(project) as (base, _), httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
        model = client.get("/model")
        predicted = client.post("/predict", json={"records": _records(project)})
        assert predicted.status_code == 200, predicted.text
        answers = [model, predicted, client.get("/health"), client.get("/metrics")]
        assert answers[2].json()["log_backend"] == "postgresql"  # the service did connect, with the password
    for answer in answers:
        assert PASSWORD not in answer.text, answer.request.url
    for output in outputs:
        assert PASSWORD not in output
    assert _holding_the_password(project) == []
    assert PASSWORD in (project / "params.yaml").read_text()  # the search would have found it
