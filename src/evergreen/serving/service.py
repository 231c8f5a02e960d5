"""The prediction service without HTTP: score records, log them, attach feedback, report health.

`PredictionService` holds the champion (`serving.champion`), the request model (`serving.schema`) and the
prediction log (`prediction_log.writer`). The FastAPI app (`serving.app`) is a thin layer over it: it checks the
token, the content type and the body size, then hands the body to `predict` or `feedback`, and turns a `Rejected`
into its status and JSON body. Anything a client can send is answered with a 2xx or a `Rejected`, never a 500.

How a request is scored:
1. the body is parsed (malformed JSON, nesting too deep or an integer of over 4,300 digits is a 400), the batch
   size is checked before any record is validated (413), then the records are validated (422 naming each bad
   field; an unknown key is repeated at most 80 characters long, and at most 20 problems are listed);
2. the current model is taken once, so one version serves the whole request, even mid-swap;
3. an output that is not a finite number (inputs such as `temp: 1e38` overflow the graph) is a 422 naming the
   records; such a request is not logged: the log holds acknowledged predictions only;
4. features outside their declared range or set are flagged per record, in the answer (`out_of_range`) and in
   the log, and still scored (see `serving.schema`);
5. the rows are committed to the prediction log before the answer is returned: no commit, no claim. A log that
   cannot commit within `serve.log_timeout_s` (another process holds its lock) is a 503.

Speed (issue 12): the app calls `predict_async`, which scores a small request on the event loop (no thread
hand-off) and awaits its commit, so concurrent requests share the log's commits. The graph's input is built by
`fast_matrix` in plain Python when the model has no derived calendar features: the same float32 matrix as
`inference.feature_matrix` (a unit test holds them equal), without a polars frame per request.

Shadow (`promote.shadow`, see `evergreen.registry.shadow`): when the registry names a shadow, every acknowledged
request is handed to `serving.shadow.ShadowScorer` (with the champion's input matrix when the shadow takes the
same input), which scores many requests per onnxruntime call on its own thread and logs the shadow's answers
(`shadow_predictions`), never sent to the client. The shadow cannot fail or hold up a request. Without a
shadow, nothing of this runs.

Health: `health()` reports `status` "ok" or "degraded", the version served, `log` "ok" or "unavailable" (a
write transaction could not be taken within a second), `shadow_version` while a shadow is scored and, when the
champion could not be served, `fallback`.
The app answers `/health` with 503 while the log is unavailable (no prediction can be acknowledged), else 200.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import polars as pl
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from evergreen.artifacts.card import redact_card
from evergreen.config import DataConfig, ServeConfig
from evergreen.data.schema import polars_type
from evergreen.errors import LabelCountMismatch, LogUnavailable, Rejected, UnknownRequest
from evergreen.inference import INPUT_NAME, ServingModel, feature_matrix, predicted_labels
from evergreen.prediction_log.base import utc_now
from evergreen.prediction_log.writer import PredictionLog, log_rows
from evergreen.privacy import Redactor
from evergreen.registry.store import Registry
from evergreen.serving.champion import Champion
from evergreen.serving.schema import RequestSchema, build_schema, clip, field_errors
from evergreen.serving.shadow import ShadowJob, ShadowScorer
from evergreen.workspace import Workspace

__all__ = ["MAX_DETAIL", "PredictionService", "Rejected", "fast_matrix", "fast_plan", "max_body_bytes"]

logger = logging.getLogger("evergreen.serve")
MAX_DETAIL = 20  # problems listed in one error body
_HEALTH_TIMEOUT_S = 1.0
_INLINE_BODY_BYTES = 16_384  # `predict_async` scores a body up to this size on the event loop


_Feedback = with_config(ConfigDict(extra="forbid"))(
    TypedDict("Feedback", {"request_id": Annotated[str, Field(min_length=1, max_length=64)], "labels": list})
)


def max_body_bytes(schema: RequestSchema, data: DataConfig, serve: ServeConfig) -> int:
    """A generous bound on the JSON of `max_batch` valid records; a larger body is a 413 before parsing."""
    per_record = 0
    for name in [*schema.features, *schema.annotations]:
        value = serve.max_string_length * 6 + 2 if data.column(name).type == "str" else 64  # \uXXXX escapes
        per_record += len(name) + 8 + value
    return 2 * serve.max_batch * per_record + 65536  # x2 for whitespace and pretty-printing


def _parse(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:  # e.g. 100,000 nested `[`
        raise Rejected(400, "the body is not valid JSON: it is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise Rejected(400, f"the body is not valid JSON: {clip(str(exc), 200)}") from None


def _invalid(exc: ValidationError, prefix: str) -> Rejected:
    errors = field_errors(exc, prefix)
    detail = [{"field": e.field, "message": e.message} for e in errors[:MAX_DETAIL]]
    return Rejected(422, f"{len(errors)} invalid field(s): " + ", ".join(e.field for e in errors[:5]), detail)


def _same(label: Any, cls: Any) -> bool:
    """A label equals a class: by value, but a bool is never the number 1 or 0 (True == 1 in Python)."""
    return label == cls and isinstance(label, bool) == isinstance(cls, bool)


def _non_finite(output: np.ndarray) -> list[int]:
    """Rows whose output (a value, or a row of class probabilities) holds NaN or infinity."""
    if np.isfinite(output).all():  # the common case, in a third of the time
        return []
    finite = np.isfinite(output.reshape(len(output), -1)).all(axis=1)
    return np.flatnonzero(~finite).tolist()


def _unlogged(exc: Exception) -> Rejected:
    logger.error("prediction log write failed: %s", exc)
    return Rejected(503, "the prediction log is unavailable; the request was not served")


@dataclass(frozen=True)
class _Scored:
    """A request scored but not yet acknowledged: its answer, its log rows, and what the metrics are told."""

    answer: dict[str, Any]
    rows: list[tuple[Any, ...]]
    version: str
    flagged: list[list[str]]
    shadow: ShadowJob | None = None  # what the shadow scores once the answer is acknowledged, when there is one


# A plan for `fast_matrix`: per graph input in order, (request field, its train vocabulary or None, int field)
_Plan = list[tuple[str, dict[str, int] | None, bool]]
_NUMERIC = (pl.Int64(), pl.Float64(), pl.Boolean())
_EXACT_INT = 2**53  # an int beyond this is not exact as a float64: float32 of it could round twice


def fast_plan(model: ServingModel, dtypes: dict[str, pl.DataType]) -> _Plan | None:
    """How `fast_matrix` builds this model's input, or None when it cannot (derived calendar features, dates)."""
    if model.derived:
        return None
    plan: _Plan = []
    vocabularies = model.vocabularies
    for name in model.features:
        dtype = dtypes.get(name)
        if name in vocabularies and dtype == pl.String():
            plan.append((name, {value: code for code, value in enumerate(vocabularies[name])}, False))
        elif dtype in _NUMERIC and name not in vocabularies:
            plan.append((name, None, dtype == pl.Int64()))
        else:
            return None
    return plan


def fast_matrix(plan: _Plan, records: list[dict[str, Any]]) -> np.ndarray | None:
    """`inference.feature_matrix` of validated records, in plain Python: float32 [N, F], NaN for a missing value
    or an unseen category. It skips building a polars frame, which costs ten times the graph's run for one
    record. None for a value it cannot convert exactly (an int beyond 2**53): the caller takes the polars path.
    """
    nan = math.nan
    matrix = []
    for record in records:
        row = []
        for name, vocabulary, integer in plan:
            value = record[name]
            if value is None:
                row.append(nan)
            elif vocabulary is not None:
                code = vocabulary.get(value)
                row.append(nan if code is None else code)
            elif integer and not -_EXACT_INT <= value <= _EXACT_INT:
                return None
            else:
                row.append(value)
        matrix.append(row)
    with np.errstate(over="ignore"):  # a value beyond float32 becomes infinity, as in the polars cast
        return np.array(matrix, dtype=np.float64).astype(np.float32)


class PredictionService:
    """Scoring, logging and feedback for one workspace, callable without HTTP.

    Raises `ServeError` or `RegistryError` when it could not serve: no champion, none that loads (see
    `serving.champion` for the fallback), a champion that does not fit the declared features. The hooks feed
    the metrics (`serving.metrics`): `on_scored(version, out_of_range)` once a request's rows are committed,
    `on_commit(seconds, operations)` after each commit of the prediction log.
    """

    def __init__(
        self,
        workspace: Workspace,
        on_scored: Callable[[str, list[list[str]]], None] | None = None,
        on_commit: Callable[[float, int], None] | None = None,
    ):
        params = workspace.params
        self.serve, self.data = params.serve, params.data
        self.schema = build_schema(self.data, params.clean, self.serve.max_string_length)
        self.redactor = Redactor(self.data)  # a `pii: hash` column without its key stops the start, not a request
        # the champion first: a service that cannot load one opens nothing else
        self.champion = Champion(
            Registry(workspace.registry), self.data, self.serve.reload_interval_s, self.serve.fallback
        )
        self.log = PredictionLog(
            workspace.prediction_log_location, timeout_s=self.serve.log_timeout_s, on_commit=on_commit
        )
        self._on_scored = on_scored
        self.body_limit = max_body_bytes(self.schema, self.data, self.serve)
        self._dtypes = {n: polars_type(self.data.column(n)) for n in self.schema.features}
        self._feedback = TypeAdapter(_Feedback)
        self._plans: dict[str, _Plan | None] = {}  # per model version: how `fast_matrix` builds its input
        self._same_input: dict[tuple[str, str], bool] = {}  # (champion, shadow): one input matrix serves both
        self.shadow_scorer = ShadowScorer(self.log, self._matrix)

    def start(self) -> None:
        """Start watching the registry for a new champion."""
        self.champion.start()

    def close(self) -> None:
        """Stop the watcher; finish the queued log writes and close the log."""
        self.champion.stop()
        self.shadow_scorer.close()  # its last answers go to the log before it closes
        self.log.close()

    def __enter__(self) -> PredictionService:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ requests
    def predict(self, body: bytes | str | Any) -> dict[str, Any]:
        """Score `{"records": [...]}` (JSON text, or already parsed); the answer once the rows are logged."""
        scored = self._score(body)
        try:
            self.log.write(scored.rows)
        except Exception as exc:  # not logged means not acknowledged
            raise _unlogged(exc) from None
        return self._acknowledge(scored)

    async def predict_async(self, body: bytes) -> dict[str, Any]:
        """`predict` for the event loop. A small body (the one-record request that dominates) is scored inline:
        it costs tens of microseconds, less than a hand-off to a thread; a large one is scored on a thread so
        it does not stall the other requests. The commit is awaited: no thread is parked while it runs."""
        if len(body) <= _INLINE_BODY_BYTES:
            scored = self._score(body)
        else:
            scored = await asyncio.to_thread(self._score, body)
        try:
            await self.log.write_async(scored.rows)
        except Exception as exc:  # not logged means not acknowledged
            raise _unlogged(exc) from None
        return self._acknowledge(scored)

    def _score(self, body: bytes | str | Any) -> _Scored:
        """Parse, validate and score a request (see the module docstring); its answer and its log rows."""
        model = self.champion.model  # taken once: this request is served by this version only
        shadow = self.champion.shadow.model  # likewise; None (the common case) when there is no shadow
        payload = _parse(body) if isinstance(body, bytes | bytearray | str) else body
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            raise Rejected(422, 'the body must be a JSON object {"records": [{...}, ...]}')
        unknown = sorted(clip(str(k)) for k in set(payload) - {"records"})
        if unknown:
            message = "unknown field; the body holds only 'records'"
            detail = [{"field": k, "message": message} for k in unknown[:MAX_DETAIL]]
            raise Rejected(422, f"unknown field(s) in the body: {', '.join(unknown[:5])}", detail)
        if len(payload["records"]) > self.serve.max_batch:
            raise Rejected(413, f"{len(payload['records'])} records in one request; at most {self.serve.max_batch}")
        try:
            records = self.schema.validate_records(payload["records"])
        except ValidationError as exc:
            raise _invalid(exc, "records") from None
        matrix = self._matrix(model, records)
        # one run for a request (max_batch rows): onnx_predict's slicing and concatenation cost more than the run
        output = model.session.run(None, {INPUT_NAME: matrix})[0]
        flagged = self.schema.out_of_range(records)
        broken = _non_finite(output)
        if broken:
            raise self._not_finite(broken, flagged, model.version)
        predictions = predicted_labels(model, output)
        probabilities = None if model.task == "regression" else output.tolist()
        request_id = uuid.uuid4().hex
        answer = {"request_id": request_id, "model_version": model.version, "predictions": predictions}
        if probabilities is not None:
            answer |= {"classes": model.classes, "probabilities": probabilities}
        answer["out_of_range"] = flagged
        rows = log_rows(
            request_id, utc_now(), model.version, records, predictions, probabilities, flagged, self.redactor
        )
        if shadow is None:
            return _Scored(answer, rows, model.version, flagged)
        pair = (model.version, shadow.version)
        same = self._same_input.get(pair)
        if same is None:
            same = self._same_input[pair] = shadow.signature["input"] == model.signature["input"]
        job = ShadowJob(shadow, request_id, records, matrix if same else None)
        return _Scored(answer, rows, model.version, flagged, job)

    def _matrix(self, model: ServingModel, records: list[dict[str, Any]]) -> np.ndarray:
        """The graph's input for validated records: `fast_matrix` where it applies, else the shared polars path
        (`inference.feature_matrix`), which derives calendar features and is the reference for the fast one."""
        plan = self._plans.get(model.version)
        if plan is None:
            plan = self._plans[model.version] = fast_plan(model, self._dtypes)
        matrix = fast_matrix(plan, records) if plan else None
        if matrix is not None:
            return matrix
        names = model.request_columns  # the features sent, and the timestamp derived features come from
        # row orientation: four times faster than per-column lists for the one-record requests that dominate
        rows = [tuple(r[n] for n in names) for r in records]
        frame = pl.DataFrame(rows, schema={n: self._dtypes[n] for n in names}, orient="row")
        return feature_matrix(frame, model.features, model.vocabularies, model.derived)

    def _acknowledge(self, scored: _Scored) -> dict[str, Any]:
        if scored.shadow is not None:  # committed: the shadow may score it now
            self.shadow_scorer.submit(scored.shadow)
        if self._on_scored is not None:
            self._on_scored(scored.version, scored.flagged)
        return scored.answer

    def _not_finite(self, rows: list[int], flagged: list[list[str]], version: str) -> Rejected:
        def why(i: int) -> str:
            outside = f" (outside the declared range: {', '.join(flagged[i])})" if flagged[i] else ""
            return f"the model's output is not a finite number{outside}"

        logger.warning("refused a request: model %s gave a non-finite output for record(s) %s", version, rows[:5])
        detail = [{"field": f"records[{i}]", "message": why(i)} for i in rows[:MAX_DETAIL]]
        where = ", ".join(f"records[{i}]" for i in rows[:5])
        return Rejected(
            422,
            f"no finite prediction for {len(rows)} record(s): {where}; their values are far outside what the "
            "model was trained on. Nothing was scored or logged",
            detail,
        )

    def feedback(self, body: bytes | str | Any) -> dict[str, Any]:
        """Attach `{"request_id": ..., "labels": [...]}`, in record order, to an earlier request's rows."""
        try:
            payload = _parse(body) if isinstance(body, bytes | bytearray | str) else body
            feedback = self._feedback.validate_python(payload)
        except ValidationError as exc:
            raise _invalid(exc, "body") from None
        try:
            labels = self.schema.labels.validate_python(feedback["labels"])
        except ValidationError as exc:
            raise _invalid(exc, "labels") from None
        self._check_classes(labels)
        try:
            count = self.log.attach_labels(feedback["request_id"], labels)
        except UnknownRequest as exc:
            raise Rejected(404, str(exc)) from None
        except LabelCountMismatch as exc:
            raise Rejected(422, str(exc)) from None
        except LogUnavailable as exc:
            logger.error("feedback not recorded: %s", exc)
            raise Rejected(503, "the prediction log is unavailable; the labels were not recorded") from None
        return {"request_id": feedback["request_id"], "labelled": count}

    def _check_classes(self, labels: list[Any]) -> None:
        """A 422 naming each label that is none of the champion's classes (its signature): a label the model
        cannot output would poison monitoring's metrics and, landed as feedback, the next training set."""
        model = self.champion.model
        if model.task != "classification":
            return
        classes = model.classes
        stray = [(i, v) for i, v in enumerate(labels) if v is not None and not any(_same(v, c) for c in classes)]
        if stray:
            shown = ", ".join(clip(repr(v)) for _, v in stray[:5])
            message = f"not one of the classes of model {model.version}: {clip(repr(classes), 300)}"
            detail = [{"field": f"labels[{i}]", "message": message} for i, _ in stray[:MAX_DETAIL]]
            raise Rejected(422, f"{len(stray)} label(s) outside the model's classes: {shown}", detail)

    # ------------------------------------------------------------------------------------------- reports
    def health(self) -> dict[str, Any]:
        """`status` ok/degraded, the version served, whether the log takes writes now, any champion fallback."""
        problem = self.log.check(min(_HEALTH_TIMEOUT_S, self.serve.log_timeout_s))
        model, fallback, shadow = self.champion.model, self.champion.fallback, self.champion.shadow.model
        report: dict[str, Any] = {
            "status": "ok" if problem is None and fallback is None else "degraded",
            "model_version": model.version,
            "log": "ok" if problem is None else "unavailable",
            "log_backend": self.log.kind,  # "sqlite" or "postgresql" (serve.log_url)
        }
        if shadow is not None:
            report["shadow_version"] = shadow.version
        if problem is not None:
            report["log_error"] = problem
        if fallback is not None:
            report["fallback"] = fallback.as_dict()
        return report

    def model_info(self) -> dict[str, Any]:
        """The served version, its model card, its signature, the request schema and any fallback."""
        model, fallback, shadow = self.champion.model, self.champion.fallback, self.champion.shadow.model
        return {
            "version": model.version,
            "shadow_version": shadow.version if shadow is not None else None,
            "task": model.task,
            "features": model.features,
            "card": redact_card(model.card),  # a card from an older Evergreen may hold a password
            "signature": model.signature,
            "request_schema": self.schema.json_schema,
            "max_batch": self.serve.max_batch,
            **({"fallback": fallback.as_dict()} if fallback is not None else {}),
        }
