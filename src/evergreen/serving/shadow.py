"""The shadow model's scoring, off the request path: many requests per onnxruntime call.

A request served while a shadow is loaded hands a `ShadowJob` (its validated records, and the champion's input
matrix when the shadow takes the same input) to `ShadowScorer.submit` once its answer is committed: an append
under a lock. A thread takes everything handed over since its last pass, runs the shadow's graph once over all of it,
and writes the answers to the prediction log's `shadow_predictions` in one commit; then it waits out the rest of
`interval_s` (0.1 s) before the next pass, so the shadow costs the log a few commits a second however busy
the service is (at one connection, a commit of its own after each request halved the requests per second).

Why not in the request: measured on the bundled model under `wrk` (bench/bench_shadow.py), a second
onnxruntime call per request on the event loop cost about a quarter of the service's requests per second. In
the scorer's thread onnxruntime runs without the GIL, and one call for tens of records costs little more than
one for one record.

The shadow can never fail or slow a request beyond the hand-over: a graph error, a non-finite output or a log
that cannot commit only leaves those records without a shadow answer (said once in the server's log), and when
the scorer falls behind by `max_pending_rows`, later requests are not scored by the shadow (counted in
`skipped`) until it catches up. The shadow's answers are evidence for the shadow gate, not acknowledged
predictions: a process killed before a pass loses the last few, which the gate never misses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from evergreen.inference import ServingModel, onnx_predict, predicted_labels
from evergreen.prediction_log.writer import PredictionLog
from evergreen.serving.schema import clip

__all__ = ["ShadowJob", "ShadowScorer"]

logger = logging.getLogger("evergreen.serve")

BuildMatrix = Callable[[ServingModel, list[dict[str, Any]]], np.ndarray]


@dataclass(frozen=True)
class ShadowJob:
    """One acknowledged request to score with the shadow."""

    shadow: ServingModel
    request_id: str
    records: list[dict[str, Any]]
    matrix: np.ndarray | None  # the champion's input, when the shadow takes the same; else built from records


class ShadowScorer:
    """Scores acknowledged requests with the shadow model on its own thread, and logs its answers.

    `build(model, records)` makes a model's input matrix from validated records (the service's `_matrix`).
    """

    def __init__(self, log: PredictionLog, build: BuildMatrix, max_pending_rows: int = 50_000, interval_s: float = 0.1):
        self._log, self._build, self._max_pending_rows, self._interval_s = log, build, max_pending_rows, interval_s
        self._jobs: list[ShadowJob] = []
        self._pending_rows = 0
        self._busy = False  # a pass is running
        self._open = True
        self._reported: set[str] = set()  # problems already said in the server's log (once each)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified after each pass (`flush` waits on it)
        # two events, so that a request wakes the thread only when it waits for work, never during its pause:
        # a wake-up per request had the thread and the event loop trade the GIL on every request
        self._has_jobs = threading.Event()
        self._no_pause = threading.Event()  # set by `flush` and `close`
        self.scored = 0  # records whose shadow answer was committed
        self.skipped = 0  # records the shadow did not answer: behind, failed, non-finite, or not committed
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> None:
        """Hand over an acknowledged request (never raises, never waits for the scoring)."""
        with self._lock:
            if not self._open or self._pending_rows >= self._max_pending_rows:
                self.skipped += len(job.records)
                self._report("behind", f"the shadow scorer is {self._pending_rows} records behind: skipping some")
                return
            self._jobs.append(job)
            self._pending_rows += len(job.records)
            first = len(self._jobs) == 1
        if first:
            self._has_jobs.set()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything handed over is scored and logged; False when `timeout_s` passed first."""
        self._no_pause.set()
        try:
            with self._lock:
                return self._idle.wait_for(lambda: not self._jobs and not self._busy, timeout_s)
        finally:
            if self._open:
                self._no_pause.clear()

    def close(self) -> None:
        """Score and log what was handed over, then stop (before the log closes)."""
        with self._lock:
            self._open = False
        self._no_pause.set()
        self._has_jobs.set()
        self._thread.join()

    # ------------------------------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            # the pause first: what arrives meanwhile is scored in one call and logged in one commit
            self._no_pause.wait(self._interval_s)
            self._has_jobs.wait()
            with self._lock:
                if self._open:  # once closed it stays set: the loop ends after this last pass
                    self._has_jobs.clear()
                jobs, self._jobs, self._pending_rows = self._jobs, [], 0
                if not jobs:
                    if not self._open:
                        return  # closed, and nothing left
                    continue
                self._busy = True
            try:
                self._pass(jobs)
            finally:
                with self._lock:
                    self._busy = False
                    self._reported.discard("behind")  # caught up: say so again if it falls behind again
                    self._idle.notify_all()

    def _pass(self, jobs: list[ShadowJob]) -> None:
        rows: list[tuple[Any, ...]] = []
        by_version: dict[str, list[ShadowJob]] = {}
        for job in jobs:
            by_version.setdefault(job.shadow.version, []).append(job)
        for group in by_version.values():
            rows += self._score(group)
        if not rows:
            return
        try:
            self._log.write([], shadow_rows=rows)
        except Exception as exc:  # the log is unavailable: these answers are lost, the service goes on
            self._count(skipped=len(rows))
            self._report("log", f"shadow answers not logged: {clip(str(exc), 300)}")
            return
        self._count(scored=len(rows))
        self._reported.discard("log")

    def _score(self, group: list[ShadowJob]) -> list[tuple[Any, ...]]:
        """The log rows of one shadow version's jobs, scored in one onnxruntime call."""
        shadow = group[0].shadow
        matrices, kept = [], []
        for job in group:
            try:
                matrices.append(job.matrix if job.matrix is not None else self._build(shadow, job.records))
                kept.append(job)
            except Exception as exc:  # this request's records cannot be put to the shadow: skip them
                self._count(skipped=len(job.records))
                self._report(f"input {shadow.version}", f"shadow {shadow.version} cannot take a request: {exc}")
        if not kept:
            return []
        try:
            output = onnx_predict(shadow.session, np.concatenate(matrices))
            finite = np.isfinite(output.reshape(len(output), -1)).all(axis=1)
            predictions = predicted_labels(shadow, output)
        except Exception as exc:
            self._count(skipped=sum(len(job.records) for job in kept))
            self._report(f"run {shadow.version}", f"shadow {shadow.version} failed to score: {clip(str(exc), 300)}")
            return []
        probabilities = None if shadow.task == "regression" else output.tolist()
        rows, offset = [], 0
        for job in kept:
            for i in range(len(job.records)):
                at = offset + i
                if finite[at]:
                    answer = None if probabilities is None else json.dumps(probabilities[at])
                    rows.append((job.request_id, i, shadow.version, predictions[at], answer))
            offset += len(job.records)
        if len(rows) < offset:
            self._count(skipped=offset - len(rows))
            self._report(f"finite {shadow.version}", f"shadow {shadow.version} gave non-finite output(s): not logged")
        return rows

    def _count(self, scored: int = 0, skipped: int = 0) -> None:
        with self._lock:
            self.scored += scored
            self.skipped += skipped

    def _report(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            with contextlib.suppress(Exception):
                logger.error("%s (said once)", message)
