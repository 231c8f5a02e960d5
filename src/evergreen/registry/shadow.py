"""The shadow gate: a challenger scored beside the champion on live traffic is promoted or discarded.

With `promote.shadow`, a challenger that passed the offline gate goes to the registry's shadow (`SHADOW`)
instead of becoming the champion. The service scores every request with both, answers with the champion and
logs the shadow's answer beside it (the prediction log's `shadow_predictions`). Labels arrive through `/feedback`.
This gate then judges:
- fewer than `min_labels` labelled records that both scored: wait; after `max_wait_hours` in the shadow,
  discard it (a challenger nobody can judge is not promoted on faith);
- enough: compare the shadow with the champion on those records with the offline gate's paired bootstrap
  (`gate.compare`: same metric, samples, confidence and seed) and its rule (`gate.champion_check`: at most
  `champion_margin` worse), then promote (`Registry.promote`, verified as servable, then `end_shadow`) or
  discard (`end_shadow`).
Only records scored by the current champion count: after a champion change the shadow is compared with the
model it is meant to replace. The verdict and its evidence go to the decisions log (`ShadowDecision`) and the
shadow's model card (`shadow`).

`judge` is the pure decision; `check_shadow` reads the registry and the log, acts and records. Run by
`evergreen shadow` and by every monitoring run (`monitoring.monitor.monitor_once`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import filelock
import numpy as np
import polars as pl

from evergreen.artifacts.decisions import ShadowDecision, append_entry, read_history
from evergreen.artifacts.reports import Comparison, ShadowVerdict
from evergreen.config import Params, PromoteConfig, ShadowConfig
from evergreen.errors import RegistryError
from evergreen.inference import SIGNATURE_FILE, servable
from evergreen.prediction_log.base import LogColumns
from evergreen.prediction_log.read import count_shadow_labels, read_shadow_pairs
from evergreen.registry.gate import align_classes, align_weights, champion_check, compare
from evergreen.registry.store import Registry
from evergreen.workspace import Workspace

__all__ = [
    "LivePairs",
    "check_shadow",
    "judge",
    "live_pairs",
    "record_replaced",
    "shadow_started",
    "version_classes",
]

_ROWS = "labelled live records"
SHADOW_LOCK = ".shadow.lock"  # in the registry's folder: held by whoever judges and ends the shadow


@dataclass(frozen=True)
class LivePairs:
    """Labelled live records both models scored, as `gate.compare` takes them: targets (values or class
    indices) and each model's output (predictions, or probabilities over the same classes)."""

    actual: np.ndarray
    shadow: np.ndarray
    champion: np.ndarray
    # each model's decision weights over the same classes (`gate.align_weights`); empty: the most probable class
    shadow_weights: list[float] = field(default_factory=list)
    champion_weights: list[float] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.actual)


def judge(
    *,
    version: str,
    champion: str,
    labelled: int,
    waited_hours: float,
    shadow: ShadowConfig,
    champion_margin: float,
    comparison: Comparison | None,
    now: str | None = None,
) -> ShadowVerdict:
    """The verdict on shadow `version`: promoted, discarded or still waiting, with why.

    `comparison` (shadow as challenger against `champion` on the `labelled` records) is only read once
    `labelled` reaches `shadow.min_labels`; the caller need not compute it before.
    """
    evidence: dict[str, Any] = {
        "version": version,
        "champion": champion,
        "labelled_rows": labelled,
        "min_labels": shadow.min_labels,
        "waited_hours": round(waited_hours, 4),
        "max_wait_hours": shadow.max_wait_hours,
        "time": now,
    }
    if labelled >= shadow.min_labels:
        if comparison is None:
            raise ValueError(f"{labelled} labelled records reach min_labels: judging the shadow needs its comparison")
        check = champion_check(comparison.metric, comparison, champion_margin, rows=_ROWS)
        outcome = "promoted" if check.passed else "discarded"
        verb = "no worse than" if check.passed else "worse than"
        reason = f"shadow {version} is {verb} champion {champion} on live traffic: {check.detail}"
        return ShadowVerdict(outcome=outcome, comparison=comparison, reasons=[reason], **evidence)
    short = f"{labelled} of the {shadow.min_labels} {_ROWS} needed (promote.shadow.min_labels)"
    if waited_hours >= shadow.max_wait_hours:
        reason = (
            f"timed out: {waited_hours:.1f} h in the shadow (promote.shadow.max_wait_hours {shadow.max_wait_hours:g}) "
            f"with {short}; send labels through /feedback sooner, or lower min_labels"
        )
        return ShadowVerdict(outcome="discarded", reasons=[reason], **evidence)
    left = shadow.max_wait_hours - waited_hours
    return ShadowVerdict(outcome="waiting", reasons=[f"waiting: {short}; {left:.1f} h left"], **evidence)


def version_classes(registry: Registry, version: str) -> list[Any]:
    """A version's class labels in output order (its signature): how its logged probabilities are read."""
    return list(_output(registry, version).get("classes", []))


def version_weights(registry: Registry, version: str) -> list[float]:
    """A version's decision weights (its signature; empty: it decides the most probable class)."""
    return list(_output(registry, version).get("decision_weights", []))


def _output(registry: Registry, version: str) -> dict[str, Any]:
    return json.loads((registry.path(version) / SIGNATURE_FILE).read_text()).get("output", {})


def live_pairs(
    pairs: pl.DataFrame, task: str, shadow_classes: list[Any], champion_classes: list[Any],
    weights: tuple[list[float], list[float]] = ([], []),
) -> LivePairs:  # fmt: skip
    """`read_shadow_pairs`' frame as arrays for `gate.compare`. Classification: probabilities of both models
    aligned on one class list (theirs, then any label neither knows), labels as indices into it."""
    c = LogColumns
    if task == "regression":
        pairs = pairs.drop_nulls([c.LABEL, c.PREDICTION, c.SHADOW_PREDICTION])
        return LivePairs(
            actual=pairs[c.LABEL].to_numpy().astype(np.float64),
            shadow=pairs[c.SHADOW_PREDICTION].to_numpy().astype(np.float64),
            champion=pairs[c.PREDICTION].to_numpy().astype(np.float64),
        )
    pairs = pairs.drop_nulls([c.LABEL, c.PROBABILITIES, c.SHADOW_PROBABILITIES])
    labels = pairs[c.LABEL].to_list()
    every = list(dict.fromkeys([*champion_classes, *shadow_classes, *labels]))

    def probabilities(column: str, classes: list[Any]) -> np.ndarray:
        rows = [json.loads(text) for text in pairs[column].to_list()]
        return align_classes(np.array(rows, dtype=np.float64).reshape(len(rows), len(classes)), classes, every)

    return LivePairs(
        actual=np.array([every.index(v) for v in labels], dtype=np.int64),
        shadow=probabilities(c.SHADOW_PROBABILITIES, shadow_classes),
        champion=probabilities(c.PROBABILITIES, champion_classes),
        shadow_weights=align_weights(weights[0], shadow_classes, every),
        champion_weights=align_weights(weights[1], champion_classes, every),
    )


def shadow_started(registry: Registry, version: str) -> dt.datetime:
    """When `version` last went into the shadow (the registry's history), else when it was registered."""
    events = [e for e in registry.history() if e.get("event") == "shadow" and e.get("version") == version]
    stamp = events[-1].get("time") if events else registry.card(version).get("registered_at")
    if not stamp:
        raise RegistryError(f"{registry.root}: no record of when {version} went into the shadow")
    started = dt.datetime.fromisoformat(str(stamp))
    return started if started.tzinfo else started.replace(tzinfo=dt.UTC)


def _comparison(pairs: LivePairs, metric: str, cfg: PromoteConfig) -> Comparison:
    return compare(metric, pairs.actual, pairs.shadow, pairs.champion, cfg.bootstrap_samples, cfg.confidence,
                   cfg.seed, weights=(pairs.shadow_weights, pairs.champion_weights))  # fmt: skip


def check_shadow(ws: Workspace, now: dt.datetime | None = None, act: bool = True) -> ShadowVerdict | None:
    """Judge the registry's shadow, if there is one; None when there is none.

    With `act` (the default), a verdict of promoted or discarded is carried out in the registry and recorded in
    the decisions log and the shadow's model card; without, it is only reported (`evergreen shadow`).
    `now` defaults to the current time (a naive one is taken as UTC).

    Acting holds the registry's shadow lock from reading the shadow to recording its verdict: of two checks at
    once, one ends the shadow and records it, the other then finds no shadow. Acting also records the end of any
    shadow a newer challenger replaced before its verdict (`record_replaced`).
    """
    registry = Registry(ws.registry, keep_versions=ws.params.promote.keep_versions)  # retention after a promotion
    if not act:
        return _check(ws, registry, now, act=False)
    if not registry.root.is_dir():
        return None  # no registry, no shadow (and no folder to create for a lock)
    with _shadow_lock(registry):
        record_replaced(ws, registry)
        return _check(ws, registry, now, act=True)


def _shadow_lock(registry: Registry) -> filelock.FileLock:
    # one object per path in a process, so that `record_replaced` may take it again inside `check_shadow`
    return filelock.FileLock(str(registry.root / SHADOW_LOCK), is_singleton=True)


def _check(ws: Workspace, registry: Registry, now: dt.datetime | None, act: bool) -> ShadowVerdict | None:
    version = registry.shadow()
    if version is None:
        return None
    params: Params = ws.params
    cfg = params.promote
    champion = registry.champion()
    now = now or dt.datetime.now(dt.UTC)
    now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    if cfg.shadow is None or champion is None or champion == version:
        verdict = _unjudged(registry, version, champion, cfg.shadow, now)
    else:
        # never negative: a clock behind the registry's (another machine's) is no reason to discard
        waited = max(0.0, (now - shadow_started(registry, version)).total_seconds() / 3600)
        frame = read_shadow_pairs(ws.prediction_log_location, version, params.data)
        frame = frame.filter(pl.col(LogColumns.MODEL_VERSION) == champion)  # scored beside this champion
        task = params.data.task
        weights = (version_weights(registry, version), version_weights(registry, champion))
        pairs = live_pairs(frame, task, version_classes(registry, version), version_classes(registry, champion),
                           weights)  # fmt: skip
        enough = pairs.rows >= cfg.shadow.min_labels
        verdict = judge(
            version=version,
            champion=champion,
            labelled=pairs.rows,
            waited_hours=waited,
            shadow=cfg.shadow,
            champion_margin=cfg.champion_margin,
            comparison=_comparison(pairs, cfg.metric_for(task), cfg) if enough else None,
            now=now.isoformat(),
        )
    if act and verdict.outcome != "waiting":
        verdict = _carry_out(ws, registry, verdict)
    return verdict


def _unjudged(
    registry: Registry, version: str, champion: str | None, shadow: ShadowConfig | None, now: dt.datetime
) -> ShadowVerdict:
    """A shadow that cannot be judged as configured: already the champion (ended here), or no settings."""
    evidence = {"version": version, "champion": champion, "labelled_rows": 0, "time": now.isoformat()}
    limits = {"min_labels": 0, "max_wait_hours": 0.0}
    if shadow is not None:
        limits = {"min_labels": shadow.min_labels, "max_wait_hours": shadow.max_wait_hours}
    if champion == version:
        made = _champion_event(registry, version)
        if made is not None and made["event"] == "rollback":  # the shadow gate never judged it: not a promotion
            reason = (
                f"{version} became the champion again by a rollback from {made.get('previous')}, not through the "
                "shadow gate: its shadow ends unjudged"
            )
            return ShadowVerdict(outcome="rolled_back", waited_hours=0.0, reasons=[reason], **evidence, **limits)
        # promoted, then interrupted before the shadow pointer was removed (or promoted by hand meanwhile)
        reason = f"{version} is the champion already"
        if made is not None and not str(made.get("reason", "")).startswith("shadow gate"):
            reason += f", promoted by hand ({made.get('reason')}), not judged on live traffic"
        return ShadowVerdict(outcome="promoted", waited_hours=0.0, reasons=[reason], **evidence, **limits)
    reason = (
        f"{version} is in the shadow but it cannot be judged: "
        + ("the registry has no champion" if champion is None else "promote.shadow is null in params.yaml")
        + "; set promote.shadow, or end it by hand (remove the registry's SHADOW file)"
    )
    return ShadowVerdict(outcome="waiting", waited_hours=0.0, reasons=[reason], **evidence, **limits)


def _carry_out(ws: Workspace, registry: Registry, verdict: ShadowVerdict) -> ShadowVerdict:
    """Promote or discard the shadow as judged; record the verdict in the decisions log and the model card."""
    version, reason = verdict.version, "; ".join(verdict.reasons)
    if verdict.outcome == "promoted" and registry.champion() != version:
        try:
            registry.promote(version, reason=f"shadow gate: {reason}", verify=servable(ws.params.data))
        except RegistryError as exc:  # damaged since it went into the shadow: it must not serve
            why = f"could not be promoted: {exc}"
            verdict = verdict.model_copy(update={"outcome": "discarded", "reasons": [*verdict.reasons, why]})
            reason = "; ".join(verdict.reasons)
    registry.end_shadow(version, outcome=verdict.outcome, reason=reason)
    registry.annotate(version, {"shadow": verdict.to_dict()})
    append_entry(ws.decisions, ShadowDecision(**verdict.model_dump()))
    return verdict


def _champion_event(registry: Registry, version: str) -> dict[str, Any] | None:
    """The registry's last event that made `version` the champion (a promotion or a rollback), if any."""
    made = [e for e in registry.history() if e.get("event") in ("promote", "rollback") and e.get("version") == version]
    return made[-1] if made else None


def record_replaced(ws: Workspace, registry: Registry | None = None) -> list[ShadowDecision]:
    """Record in the decisions log each shadow that a newer challenger replaced before its verdict; returns what
    it wrote.

    `Registry.set_shadow` (a retrain's promote stage) ends a replaced shadow in the registry's history only; its
    decision ("replaced", with the version that replaced it) is written here, once per such end: by the retrain
    flow right after the pipeline, and by every acting `check_shadow` for a replacement made by hand. It holds
    the shadow lock, so that two callers at once write each decision once.
    """
    registry = registry or Registry(ws.registry)
    if not registry.root.is_dir():
        return []
    with _shadow_lock(registry):
        return _record_replaced(ws, registry)


def _record_replaced(ws: Workspace, registry: Registry) -> list[ShadowDecision]:
    history = registry.history()
    done = {
        (e.version, e.time)
        for e in read_history(ws.decisions)
        if isinstance(e, ShadowDecision) and e.outcome == "replaced"
    }
    written = []
    for index, event in enumerate(history):
        if event.get("event") != "end_shadow" or event.get("outcome") != "replaced":
            continue
        version, ended = str(event["version"]), event.get("time")
        if (version, ended) in done:
            continue
        decision = _replaced(ws, registry, history[:index], version, ended)
        append_entry(ws.decisions, decision)
        done.add((version, ended))
        written.append(decision)
    return written


def _replaced(
    ws: Workspace, registry: Registry, before: list[dict[str, Any]], version: str, ended: str | None
) -> ShadowDecision:
    """The decision on shadow `version`, replaced at `ended`; `before` is the registry's history up to then."""
    took = [e for e in before if e.get("event") == "shadow"]
    by = next((e.get("version") for e in reversed(took) if e.get("previous") == version), None)
    started = next((e.get("time") for e in reversed(took) if e.get("version") == version), None)
    waited = 0.0
    if started and ended:
        waited = max(0.0, (dt.datetime.fromisoformat(ended) - dt.datetime.fromisoformat(started)).total_seconds())
    shadow = ws.params.promote.shadow
    labelled = count_shadow_labels(ws.prediction_log_location, version)  # any champion's: the evidence it had
    reason = f"replaced by {by or 'a newer challenger'} before its verdict ({labelled} {_ROWS} so far)"
    return ShadowDecision(
        outcome="replaced",
        version=version,
        champion=registry.champion(),
        labelled_rows=labelled,
        min_labels=shadow.min_labels if shadow else 0,
        waited_hours=round(waited / 3600, 4),
        max_wait_hours=shadow.max_wait_hours if shadow else 0.0,
        reasons=[reason],
        time=ended,
        replaced_by=by,
    )
