"""The retraining policy as a pure function: summaries and history in, a decision out. No Evidently here."""

from __future__ import annotations

import datetime as dt

import pytest

from evergreen.artifacts.decisions import RetrainDecision, RetrainResult, append_entry, read_history
from evergreen.config import PolicyConfig
from evergreen.monitoring.policy import decide
from evergreen.monitoring.summary import ColumnDrift, MonitorSummary, Performance

FEATURES = ["temp", "hum", "hr", "weathersit"]
START = dt.datetime(2012, 1, 1)


def _summary(
    drifted: int = 0, rows: int = 1000, rmse: float | None = None, champion: str = "v1", **kw
) -> MonitorSummary:
    features = [
        ColumnDrift(n, "wasserstein", 0.3 if i < drifted else 0.01, 0.1, i < drifted) for i, n in enumerate(FEATURES)
    ]
    performance = [Performance(champion, rows, {"rmse": rmse})] if rmse is not None else []
    return MonitorSummary(
        rows=rows,
        reference_rows=5000,
        champion=champion,
        features=features,
        performance=performance,
        reference_metrics={"rmse": 60.0},
        **kw,
    )


def _at(day: int) -> str:
    return (START + dt.timedelta(days=day)).isoformat()


def _run(summaries: list[MonitorSummary], policy: PolicyConfig, step_days: int = 7) -> list[str]:
    """Feed windows through the policy the way the monitor does; returns the actions."""
    history: list[RetrainDecision] = []
    for i, summary in enumerate(summaries):
        history.append(decide(summary, history, policy, now=_at(i * step_days)))
    return [h.action for h in history]


POLICY = PolicyConfig(drift_share=0.5, consecutive=2, cooldown_hours=24 * 10, min_rows=200)


def test_no_drift_no_retrain():
    decision = decide(_summary(drifted=1), [], POLICY, now=_at(0))
    assert decision.action == "none" and not decision.drifted and decision.drift_share == 0.25


def test_hysteresis_needs_consecutive_drifted_windows():
    assert _run([_summary(2), _summary(0), _summary(2), _summary(2)], POLICY) == ["none", "none", "none", "retrain"]


def test_one_drift_episode_causes_one_retrain_and_failed_retrains_back_off():
    # drift persists for months against the same champion: every retrain was not promoted
    actions = _run([_summary(3)] * 12, POLICY)  # weekly windows, cooldown 10 days
    # retrain at day 7; the next waits 2 x 10 days (day 28), the next 3 x 10 days (day 63)
    assert [i for i, a in enumerate(actions) if a == "retrain"] == [1, 4, 9]
    history: list[RetrainDecision] = []
    for i in range(3):
        history.append(decide(_summary(3), history, POLICY, now=_at(i * 7)))
    assert "1 earlier retrain(s) did not replace v1" in history[-1].reasons[-1]


def test_a_new_champion_starts_a_new_episode_after_the_cooldown():
    summaries = [_summary(3)] * 3 + [_summary(3, champion="v2")] * 3
    actions = _run(summaries, POLICY)
    assert actions == ["none", "retrain", "none", "none", "retrain", "none"]  # v2: 2 in a row + cooldown (10 d)


def test_cooldown_blocks_a_retrain():
    policy = POLICY.model_copy(update={"cooldown_hours": 24 * 30})
    summaries = [_summary(3)] * 2 + [_summary(0)] + [_summary(3, champion="v2")] * 2
    history: list[RetrainDecision] = []
    for i, summary in enumerate(summaries):
        history.append(decide(summary, history, policy, now=_at(i * 7)))
    assert [h.action for h in history] == ["none", "retrain", "none", "none", "none"]
    assert history[-1].reasons[-1].startswith("cooldown:")


def test_performance_degradation_counts_as_drift():
    policy = POLICY.model_copy(update={"performance_degradation": 0.2, "consecutive": 1})
    ok = decide(_summary(0, rmse=66.0), [], policy, now=_at(0))
    assert ok.action == "none" and ok.degradation == pytest.approx(0.1)
    worse = decide(_summary(0, rmse=90.0), [], policy, now=_at(0))
    assert worse.action == "retrain" and "performance: rmse +50%" in worse.reasons[0]


def test_insufficient_data_is_a_decision_not_a_crash():
    for rows in (0, 10):
        decision = decide(_summary(3, rows=rows), [], POLICY, now=_at(0))
        assert decision.action == "insufficient_data" and "needs 200" in decision.reasons[0]
    # and it neither counts as drift nor breaks a streak
    assert _run([_summary(3), _summary(3, rows=5), _summary(3)], POLICY) == ["none", "insufficient_data", "retrain"]


def test_schema_drift_raises_an_alert():
    decision = decide(_summary(0, missing_columns=["hum"], unexpected_columns=["humidity"]), [], POLICY, now=_at(0))
    assert decision.action == "alert"
    assert decision.reasons == [
        "schema drift: declared column(s) missing from the log: hum",
        "schema drift: undeclared column(s) in the log: humidity",
    ]


def test_retrain_every_fallback():
    policy = POLICY.model_copy(update={"retrain_every": 3, "cooldown_hours": 0})
    assert _run([_summary(0)] * 7, policy) == ["none", "none", "retrain", "none", "none", "retrain", "none"]


def test_decisions_log_round_trip(tmp_path):
    path = tmp_path / "monitoring" / "decisions.jsonl"
    assert read_history(path) == []
    entry = decide(_summary(3), [], POLICY, now=_at(0))
    failed = RetrainResult(status="failed", error="boom")
    append_entry(path, entry)
    append_entry(path, failed)
    assert read_history(path) == [entry, failed]


def test_failed_and_skipped_retrains_do_not_count_as_windows():
    # results in the log (failed, skipped) are not monitoring windows: they neither break nor extend a streak
    first = decide(_summary(3), [], POLICY, now=_at(0))
    noise = [RetrainResult(status="failed", error="boom"), RetrainResult(status="skipped")]
    assert decide(_summary(3), [first, *noise], POLICY, now=_at(7)).action == "retrain"
