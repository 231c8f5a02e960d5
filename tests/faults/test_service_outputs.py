"""The prediction service's core (`PredictionService`, no HTTP) on a trained model: what it answers, what it
logs, and the outputs and labels it must refuse (issue 10 b and f)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from evergreen.serving.log import LogColumns, read_log
from evergreen.serving.service import PredictionService, Rejected

pytestmark = [pytest.mark.slow]


def _good(trained) -> dict:
    return trained.records()[0]


def test_predict_logs_each_record_and_answers_with_its_request_id(service, trained):
    """A scored request answers one prediction per record, the version, a request id and out-of-range flags,
    and its rows are in the log (features, prediction, flags) once `predict` returns."""
    records = trained.records()[:3]
    answer = service.predict(json.dumps({"records": records}).encode())
    assert answer["model_version"] == "v1" and len(answer["predictions"]) == 3
    assert answer["out_of_range"] == [[], [], []]
    log = read_log(service.log.path)
    assert log["request_id"].to_list() == [answer["request_id"]] * 3
    assert log["prediction"].to_list() == answer["predictions"]
    assert log["id"].to_list() == [r["id"] for r in records]
    assert log[LogColumns.OUT_OF_RANGE].to_list() == [[], [], []]


def test_predict_refuses_bad_payloads_with_the_right_status(service, trained):
    """Errors a client can cause are `Rejected` with a 4xx status, and nothing is logged for them."""
    good = _good(trained)
    cases = [
        (b"{", 400),
        ([1], 422),
        ({"records": [good], "x": 1}, 422),
        ({"records": [{**good, "hr": "7"}]}, 422),
        ({"records": [good] * 51}, 413),
    ]
    for body, status in cases:
        with pytest.raises(Rejected) as caught:
            service.predict(body)
        assert caught.value.status == status, (body, caught.value.body())
    assert read_log(service.log.path).height == 0


def test_a_non_finite_output_is_a_422_naming_the_record_and_is_not_logged(service, trained):
    """Promise: an answer is valid JSON holding finite numbers, and the log holds acknowledged predictions only.
    Attack: values the schema accepts (finite float64) but the graph overflows on: temp 1e38, hum 1e308, temp
    1e6 (exp of the log-scale output). Before: the row was committed with a NULL prediction, then the answer
    failed to serialise (500)."""
    good = _good(trained)
    for change in ({"temp": 1e38}, {"hum": 1e308}, {"temp": 1e6}):
        with pytest.raises(Rejected) as caught:
            service.predict({"records": [good, {**good, **change}]})
        assert caught.value.status == 422
        assert "records[1]" in caught.value.error and caught.value.detail[0]["field"] == "records[1]"
        assert list(change)[0] in caught.value.detail[0]["message"]  # it names the feature out of range
    assert read_log(service.log.path).height == 0
    with sqlite3.connect(service.log.path) as conn:
        assert conn.execute("SELECT count(*) FROM predictions WHERE prediction IS NULL").fetchone() == (0,)
    assert len(service.predict({"records": [good]})["predictions"]) == 1  # and it keeps serving


def test_out_of_range_inputs_are_scored_and_flagged_in_the_answer_and_the_log(service, trained):
    """Promise: an input outside the declared range or set is scored (drift must be seen), and flagged per
    record in the answer and in the log, so a client can distrust it and monitoring can count it. Attack:
    temp 1.5 and -0.5 (declared [0, 1]), hr 40 (declared [0, 23]), weather 9 (allowed 1, 2, 3)."""
    good = _good(trained)
    records = [good, {**good, "temp": 1.5}, {**good, "temp": -0.5, "hr": 40}, {**good, "weather": 9}]
    answer = service.predict({"records": records})
    assert answer["out_of_range"] == [[], ["temp"], ["hr", "temp"], ["weather"]]
    log = read_log(service.log.path)
    assert log[LogColumns.OUT_OF_RANGE].to_list() == [[], ["temp"], ["hr", "temp"], ["weather"]]
    assert log["prediction"].to_list() == answer["predictions"]


def test_feedback_refuses_labels_outside_the_declared_range(service, trained):
    """Promise: a label the declaration would quarantine (the target `y` is an int with min 0) is refused at
    the door with a 422 naming it, and nothing is labelled. Attack: -5, 1e308 (beyond int64), NaN as text.
    Before: they were stored as ground truth."""
    request_id = service.predict({"records": trained.records()[:3]})["request_id"]
    for labels, where in (([1, -5, 2], "labels[1]"), ([1e308, 1, 2], "labels[0]"), ([1, 2, "NaN"], "labels[2]")):
        with pytest.raises(Rejected) as caught:
            service.feedback({"request_id": request_id, "labels": labels})
        assert caught.value.status == 422 and where in caught.value.error, caught.value.body()
    assert read_log(service.log.path)["label"].null_count() == 3
    assert service.feedback({"request_id": request_id, "labels": [0, 12.0, None]}) == {
        "request_id": request_id,
        "labelled": 2,
    }
    assert read_log(service.log.path)["label"].to_list() == [0, 12, None]


def test_feedback_for_an_unknown_request_is_a_404(service):
    """An id the log does not hold is a 404, not a silent no-op."""
    with pytest.raises(Rejected) as caught:
        service.feedback(b'{"request_id": "nope", "labels": [1]}')
    assert caught.value.status == 404 and "nope" in caught.value.error


def test_health_and_model_info_report_the_served_version(service: PredictionService):
    """Without HTTP: health says ok with the log writable, model_info the version, features and schema."""
    assert service.health() == {"status": "ok", "model_version": "v1", "log": "ok"}
    info = service.model_info()
    assert info["version"] == "v1" and info["features"] == ["hr", "weather", "temp", "hum"]
    assert "fallback" not in info and info["max_batch"] == 50
