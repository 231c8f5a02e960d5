"""The retraining policy: a pure function of one monitoring summary and the decisions made before it.

Rules, in order:
1. too few rows in the window: `insufficient_data` (the window neither counts as drifted nor breaks a streak);
2. declared columns missing from the log, or unknown ones in it: `alert` (schema drift; retraining on a broken
   feed would only bake the breakage in);
3. a window is *drifted* when the share of drifted features reaches `drift_share`, or (with labels) the
   champion's metric (the declared `promote.metric`, which the summary carries as `metric`; the gate judges by
   the same one) is worse than at promotion by more than `performance_degradation`;
4. `retrain` when the last `consecutive` windows of this champion are drifted (hysteresis) and the cooldown
   since the last retrain has passed. One drift episode causes one retrain: the windows after it are judged
   against the new champion (a streak does not carry over a promotion) and wait out the cooldown. A retrain
   that failed or was not promoted is not retried on every monitor run either: each retrain already made
   against the current champion adds a cooldown to the wait (backoff), so a champion nobody could beat is
   challenged again after 2, 3, 4, ... cooldowns while its windows stay bad;
5. `retrain` as a fallback after `retrain_every` counted windows without one, cooldown permitting;
6. no retrain while a challenger is in the shadow (`promote.shadow`): a new challenger would replace it before
   its verdict. The window is decided as usual, with action `none` and the reason; the retrain waits for the
   shadow gate;
7. hysteresis and the fallback count *distinct* windows of new predictions: a window whose newest prediction
   was already judged (monitoring run twice with no new traffic) is decided `none` and says so; it neither
   extends a streak nor counts towards `retrain_every`, now or later.

The history is the decisions log as `evergreen.artifacts.decisions.read_history` returns it: typed entries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evergreen.artifacts.decisions import Action, DecisionLogEntry, RetrainDecision
from evergreen.config import MONITORED, PolicyConfig
from evergreen.model.metrics import worsening
from evergreen.monitoring.summary import MonitorSummary

__all__ = ["Action", "RetrainDecision", "decide", "degradation"]


def degradation(summary: MonitorSummary) -> tuple[str, float] | None:
    """(metric, relative worsening) of the champion on the window's labelled rows vs its promotion metrics.

    The metric is the summary's (`promote.metric`): one metric, the gate's, judges both promotion and decay.
    """
    if summary.metric is not None:
        judged = summary.judged()
        return None if judged is None else (judged[0], worsening(judged[0], judged[1], judged[2]))
    current = summary.champion_performance()
    if current is None:
        return None
    for metric in MONITORED.values():  # a summary without a declared metric: the task's dashboard metric
        now, then = current.metrics.get(metric), summary.reference_metrics.get(metric)
        if now is not None and then:
            return metric, worsening(metric, now, then)
    return None


def _hours_between(earlier: str, later: str) -> float:
    return (dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)).total_seconds() / 3600


def decide(
    summary: MonitorSummary,
    history: Sequence[DecisionLogEntry],
    policy: PolicyConfig,
    now: str,
    shadow: str | None = None,
) -> RetrainDecision:
    """Decide what to do about one window. `history` is earlier entries of the decisions log, oldest first;
    `shadow` the version being judged in the shadow, if any (rule 6)."""
    decision = _decide(summary, history, policy, now)
    if decision.action == "retrain" and shadow is not None:
        waiting = f"no retrain while shadow {shadow} awaits its verdict (`evergreen shadow`)"
        return decision.model_copy(update={"action": "none", "reasons": [*decision.reasons, waiting]})
    return decision


def _decide(
    summary: MonitorSummary, history: Sequence[DecisionLogEntry], policy: PolicyConfig, now: str
) -> RetrainDecision:
    """Rules 1 to 5 and 7 in the module's order, each a step below (rule 6 is `decide`'s)."""
    common = {
        "time": now,
        "window_end": summary.window_end,
        "champion": summary.champion,
        "drift_share": summary.drift_share,
        "drifted_features": summary.drifted_features,
    }
    unfit = _unfit_window(summary, policy, common)
    if unfit is not None:
        return unfit
    drifted, reasons, worse = _judge_window(summary, policy)
    common["degradation"] = worse[1] if worse else None

    counted = [h for h in history if isinstance(h, RetrainDecision) and h.action != "insufficient_data"]
    distinct = _distinct_windows(counted)
    seen = _judged_before(summary.window_end, distinct)
    if seen is not None:  # no new prediction since that decision: the same evidence must not count twice
        return RetrainDecision(action="none", drifted=drifted, reasons=[*reasons, _not_counted(seen)], **common)
    cooldown = _cooldown(counted, summary.champion, policy, now)
    if drifted:
        return _decide_drifted(summary, distinct, policy, cooldown, reasons, common)
    return _decide_fallback(counted, distinct, policy, cooldown, reasons, common)


def _unfit_window(summary: MonitorSummary, policy: PolicyConfig, common: dict[str, Any]) -> RetrainDecision | None:
    """Rules 1 and 2: a window too small to judge, or a feed whose schema changed; None for a window to judge."""
    if summary.rows < policy.min_rows:
        reason = f"insufficient data: {summary.rows} rows in the window, the policy needs {policy.min_rows}"
        return RetrainDecision(action="insufficient_data", drifted=False, reasons=[reason], **common)
    if summary.missing_columns or summary.unexpected_columns:
        reasons = (
            [f"schema drift: declared column(s) missing from the log: {', '.join(summary.missing_columns)}"]
            if summary.missing_columns
            else []
        )
        if summary.unexpected_columns:
            reasons.append(f"schema drift: undeclared column(s) in the log: {', '.join(summary.unexpected_columns)}")
        return RetrainDecision(action="alert", drifted=False, reasons=reasons, **common)
    return None


def _judge_window(summary: MonitorSummary, policy: PolicyConfig) -> tuple[bool, list[str], tuple[str, float] | None]:
    """Rule 3: whether the window is drifted (features, prediction, or performance), the reasons, and the
    champion's degradation (metric, relative worsening) where labels allow one."""
    reasons: list[str] = []
    data_drift = summary.drift_share >= policy.drift_share
    if data_drift:
        reasons.append(
            f"data drift: {summary.drift_share:.0%} of features drifted (threshold {policy.drift_share:.0%}): "
            + ", ".join(summary.drifted_features)
        )
    if policy.prediction_drift and summary.prediction is not None and summary.prediction.drifted:
        data_drift = True
        reasons.append(f"prediction drift: score {summary.prediction.score:.3g} > {summary.prediction.threshold}")
    worse = degradation(summary)
    degraded = bool(policy.performance_degradation and worse and worse[1] > policy.performance_degradation)
    if degraded and worse:
        reasons.append(
            f"performance: {worse[0]} {worse[1]:+.0%} vs the champion at promotion "
            f"(threshold +{policy.performance_degradation:.0%})"
        )
    return data_drift or degraded, reasons, worse


@dataclass(frozen=True)
class _Cooldown:
    """Where the wait after the last retrain stands: that retrain, how many retrains left the current champion
    serving (each adds a cooldown: backoff), and the hours still to wait (0 or less: none)."""

    last_retrain: RetrainDecision | None
    unanswered: int
    hours_left: float

    @property
    def active(self) -> bool:
        return self.hours_left > 0


def _cooldown(counted: list[RetrainDecision], champion: str | None, policy: PolicyConfig, now: str) -> _Cooldown:
    retrains = [h for h in counted if h.action == "retrain"]
    last_retrain = retrains[-1] if retrains else None
    # retrains made against the current champion did not replace it: each one adds a cooldown to the wait
    unanswered = sum(1 for h in retrains if h.champion == champion)
    wait = policy.cooldown_hours * (1 + unanswered)
    hours_left = wait - _hours_between(last_retrain.time, now) if last_retrain else 0.0
    return _Cooldown(last_retrain, unanswered, hours_left)


def _decide_drifted(
    summary: MonitorSummary,
    distinct: list[RetrainDecision],
    policy: PolicyConfig,
    cooldown: _Cooldown,
    reasons: list[str],
    common: dict[str, Any],
) -> RetrainDecision:
    """Rule 4: retrain a drifted window once the streak is long enough and the cooldown has passed."""
    streak = 1
    for entry in reversed(distinct):
        # a new champion is judged on its own windows: a streak does not carry over a promotion
        if not entry.drifted or entry.champion != summary.champion:
            break
        streak += 1
    if streak < policy.consecutive:
        reasons.append(f"waiting: drifted {streak} of {policy.consecutive} windows in a row")
    elif cooldown.active and cooldown.last_retrain is not None:  # (a cooldown is only left after a retrain)
        unanswered, since = cooldown.unanswered, cooldown.last_retrain.time
        backoff = f" ({unanswered} earlier retrain(s) did not replace {summary.champion})" if unanswered else ""
        reasons.append(f"cooldown: {cooldown.hours_left:.0f} h left since the retrain at {since}{backoff}")
    else:
        return RetrainDecision(action="retrain", drifted=True, reasons=reasons, **common)
    return RetrainDecision(action="none", drifted=True, reasons=reasons, **common)


def _decide_fallback(
    counted: list[RetrainDecision],
    distinct: list[RetrainDecision],
    policy: PolicyConfig,
    cooldown: _Cooldown,
    reasons: list[str],
    common: dict[str, Any],
) -> RetrainDecision:
    """Rule 5: a window without drift retrains after `retrain_every` distinct windows without one."""
    if policy.retrain_every:
        last_retrain = cooldown.last_retrain
        after = counted[counted.index(last_retrain) + 1 :] if last_retrain else counted
        new = {id(d) for d in distinct}
        since_retrain = sum(1 for h in after if id(h) in new)
        if since_retrain + 1 >= policy.retrain_every and not cooldown.active:
            reason = (
                f"fallback: {since_retrain + 1} monitor runs without a retrain (retrain_every {policy.retrain_every})"
            )
            return RetrainDecision(action="retrain", drifted=False, reasons=[reason], **common)
    return RetrainDecision(action="none", drifted=False, reasons=reasons or ["no drift"], **common)


def _instant(iso: str) -> dt.datetime:
    """An ISO time as an aware UTC instant (a naive one is UTC), so that differently written times compare."""
    when = dt.datetime.fromisoformat(iso)
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _distinct_windows(entries: Sequence[RetrainDecision]) -> list[RetrainDecision]:
    """The entries that judged new predictions: each one's newest prediction is later than every earlier one's.

    Entries without `window_end` (written before it was recorded) count as distinct, as they always did.
    """
    distinct, newest = [], None
    for entry in entries:
        if entry.window_end is None:
            distinct.append(entry)
            continue
        end = _instant(entry.window_end)
        if newest is None or end > newest:
            distinct.append(entry)
            newest = end
    return distinct


def _not_counted(seen: RetrainDecision) -> str:
    return (
        f"not counted: no prediction newer than {seen.window_end}, judged at {seen.time} already "
        "(consecutive windows and retrain_every count distinct windows)"
    )


def _judged_before(window_end: str | None, distinct: Sequence[RetrainDecision]) -> RetrainDecision | None:
    """The earlier decision that already judged a prediction as new as `window_end`'s, if any."""
    if window_end is None:
        return None
    end = _instant(window_end)
    return next((h for h in reversed(distinct) if h.window_end is not None and _instant(h.window_end) >= end), None)
