"""The service's metrics, in Prometheus' text format (`GET /metrics`, behind the API token like every path but
`/health`).

Each app has its own `prometheus_client.CollectorRegistry` (never the process-wide default), so several apps in
one process (the tests) count apart. What is exposed:

    evergreen_http_requests_total{endpoint, status}        every answer, a 401, 413, 415, 422 or 503 included
    evergreen_http_request_duration_seconds{endpoint}      histogram, from the request reaching the app to the
                                                           last byte of its answer
    evergreen_http_client_disconnects_total{endpoint}      requests whose client went away before its body had
                                                           arrived: nothing to answer, and no fault of the
                                                           service, so neither a 5xx nor a traceback
    evergreen_rows_scored_total{model_version}             records scored and committed to the prediction log
    evergreen_rows_out_of_range_total                      of those, records with a feature outside its declared
                                                           range or set (the `out_of_range` flag of the answer)
    evergreen_feature_out_of_range_total{feature}          the same, per feature
    evergreen_model_info{version, task}                    1: the version serving, read at scrape time
    evergreen_model_fallback                               1 while an earlier champion is served (see /health)
    evergreen_log_commit_duration_seconds                  histogram: one group commit (lock, inserts, fsync)
    evergreen_log_commit_operations                        histogram: operations (requests) in one commit
    evergreen_drift_share                                  the last drift check: share of features drifted,
    evergreen_drift_detected                               whether the window was drifted (1/0),
    evergreen_drift_decision{action}                       its decision (1 for the one taken, 0 for the others),
    evergreen_drift_check_timestamp_seconds                and the end of its window (the log's clock)

`endpoint` is a route of the app, or "other" for any path it does not serve (so a scanner cannot create series).
The drift figures come from the decisions log (`monitor.decisions`), the last `decision` entry, read when
scraped, and read again only when the file has changed: a scrape costs a `stat` otherwise. Before the first
drift check, the drift metrics have no samples.

Several worker processes (`serve.workers`) count together: `evergreen serve` points prometheus-client's
multiprocess mode at a fresh folder (`PROMETHEUS_MULTIPROC_DIR`, see `serving.app.worker_environment`) before
the workers start, each worker's counters and histograms live in memory-mapped files there, and a scrape, whichever
worker answers it, sums every worker's files (`MultiProcessCollector`), a killed worker's included, so a counter
never goes back. There are no `Gauge` objects to reconcile across processes (no `multiprocess_mode`, nothing to
mark dead): the model and drift gauges are read when scraped, by the worker answering. One process keeps the
in-memory registry: its scrape reads no files.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evergreen.artifacts.decisions import Action, RetrainDecision, read_history
from evergreen.errors import ArtifactError
from evergreen.inference import ServingModel
from evergreen.serving.champion import Fallback

__all__ = ["MULTIPROCESS_ENV", "RequestMetrics", "ServiceMetrics"]

logger = logging.getLogger("evergreen.serve")

# request latency: the service answers in about a millisecond; a locked log makes it seconds (serve.log_timeout_s)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # the log commits at most 512 operations at once
OTHER = "other"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode, read when it is imported


class _ModelCollector(Collector):
    """The version serving and whether it is a fallback, read from the champion when scraped."""

    def __init__(self, current: Callable[[], tuple[ServingModel, Fallback | None]]):
        self.current = current

    def collect(self) -> Iterator[Metric]:
        model, fallback = self.current()
        info = InfoMetricFamily("evergreen_model", "The model version serving (1)")
        info.add_metric([], {"version": model.version, "task": model.task})
        yield info
        yield GaugeMetricFamily(
            "evergreen_model_fallback",
            "1 while the service serves an earlier champion because the registry's cannot be served",
            value=0 if fallback is None else 1,
        )


def _timestamp(text: str) -> float | None:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


class _DriftCollector(Collector):
    """The last drift check of the decisions log; the file is read again only when its size or time changed."""

    def __init__(self, path: Path):
        self.path = path
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file as last read
        self._last: RetrainDecision | None = None

    def _latest(self) -> RetrainDecision | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen, self._last = None, None
            return None
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                history = read_history(self.path)
            except (ArtifactError, OSError) as exc:  # keep the last good reading; try again next scrape
                logger.warning("metrics: cannot read the decisions log: %s", exc)
                return self._last
            self._last = next((e for e in reversed(history) if isinstance(e, RetrainDecision)), None)
            self._seen = seen
        return self._last

    def collect(self) -> Iterator[Metric]:
        decision = self._latest()
        share = GaugeMetricFamily("evergreen_drift_share", "Share of features drifted in the last drift check")
        drifted = GaugeMetricFamily("evergreen_drift_detected", "1 when the last drift check found the window drifted")
        action = GaugeMetricFamily(
            "evergreen_drift_decision", "The last drift check's decision: 1 for the action taken", labels=["action"]
        )
        when = GaugeMetricFamily(
            "evergreen_drift_check_timestamp_seconds", "End of the last drift check's window (the log's clock)"
        )
        if decision is not None:
            share.add_metric([], decision.drift_share)
            drifted.add_metric([], 1 if decision.drifted else 0)
            for name in get_args(Action):
                action.add_metric([name], 1 if decision.action == name else 0)
            moment = _timestamp(decision.time)
            if moment is not None:
                when.add_metric([], moment)
        yield from (share, drifted, action, when)


class ServiceMetrics:
    """The metrics of one app: counters the service's hooks move, collectors read when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        folder = os.environ.get(MULTIPROCESS_ENV)
        # what a scrape reads: this registry, or, with several workers, every worker's files plus the collectors
        self.scraped = self.registry
        if folder:
            self.scraped = CollectorRegistry()
            MultiProcessCollector(self.scraped, path=folder)
        self.endpoints: frozenset[str] = frozenset()  # the app's routes; any other path counts as "other"
        self.requests = Counter(
            "evergreen_http_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "evergreen_http_request_duration_seconds",
            "Time from a request reaching the app to the last byte of its answer",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.disconnects = Counter(
            "evergreen_http_client_disconnects",
            "Requests whose client closed the connection before its body had arrived (not answered)",
            ["endpoint"],
            registry=self.registry,
        )
        self.rows = Counter(
            "evergreen_rows_scored", "Records scored and committed to the prediction log", ["model_version"],
            registry=self.registry,
        )  # fmt: skip
        self.out_of_range = Counter(
            "evergreen_rows_out_of_range",
            "Records scored with at least one feature outside its declared range or set",
            registry=self.registry,
        )
        self.feature_out_of_range = Counter(
            "evergreen_feature_out_of_range",
            "Records scored with this feature outside its declared range or set",
            ["feature"],
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "evergreen_log_commit_duration_seconds",
            "One commit of the prediction log: write lock, inserts and fsync",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.commit_operations = Histogram(
            "evergreen_log_commit_operations",
            "Operations (a request's rows, a feedback, a health probe) committed together by one fsync",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )

    def watch(self, current: Callable[[], tuple[ServingModel, Fallback | None]], decisions: Path) -> None:
        """Report, at scrape time, the model `current()` names and the last decision of the `decisions` log."""
        self.scraped.register(_ModelCollector(current))
        self.scraped.register(_DriftCollector(decisions))

    # ------------------------------------------------------------------------------------------- hooks
    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in self.endpoints else OTHER
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_disconnect(self, path: str) -> None:
        """A client closed its connection before its request's body had arrived."""
        self.disconnects.labels(path if path in self.endpoints else OTHER).inc()

    def observe_scored(self, version: str, flagged: list[list[str]]) -> None:
        """A request's records were scored and committed; `flagged` holds each record's out-of-range features."""
        self.rows.labels(version).inc(len(flagged))
        outside = [names for names in flagged if names]
        if outside:
            self.out_of_range.inc(len(outside))
            for names in outside:
                for name in names:
                    self.feature_out_of_range.labels(name).inc()

    def observe_commit(self, seconds: float, operations: int) -> None:
        """The prediction log committed `operations` operations in `seconds`."""
        self.commit_seconds.observe(seconds)
        self.commit_operations.observe(operations)

    # ------------------------------------------------------------------------------------------ output
    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: Prometheus' text format, or OpenMetrics when `accept` asks."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.scraped), content_type


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request, whatever answers it (the token guard included)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started: the server answers 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientDisconnect:
            # the client sent less than its Content-Length and closed: no one is left to answer, and nothing of
            # ours failed. Counted apart and not raised on: a 500 would trip the error alert, with a traceback
            self.metrics.observe_disconnect(scope["path"])
            return
        except BaseException:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - started)
            raise
        self.metrics.observe_request(scope["path"], status, time.perf_counter() - started)


def route_paths(routes: Iterable[object]) -> frozenset[str]:
    """The paths of an app's routes (its `endpoint` label values)."""
    return frozenset(path for route in routes if isinstance(path := getattr(route, "path", None), str))
