"""The prediction service: FastAPI over onnxruntime, serving the registry's champion, logging each prediction.

Endpoints: `POST /predict` (records in, predictions + model version + request id out), `POST /feedback`
(late labels for an earlier request id), `GET /health` and `GET /model` (version, card, input schema).

How a request is served:
1. the guard checks the API token (when one is set) before anything else: a 401 is never logged;
2. the body is read with a size limit (413), parsed (malformed JSON is a 400), the batch size is checked
   before any record is validated (413), then the records are validated against the request model built
   from the declared schema (422 naming each bad field; see `serving.schema`);
3. the handler takes the current model once, so one version serves the whole request, even mid-swap;
4. the rows are committed to the prediction log before the response is sent: no response, no claim.

Champion hot-swap: a background thread reads the registry's `CHAMPION` pointer every
`serve.reload_interval_s`; when it names another version, the thread loads that version completely (session
built, signature checked against the declaration) and only then replaces the one reference requests read.
In-flight requests finish on the version they started with, and no request waits on a load. A version that
fails to load is reported and skipped; the old champion keeps serving.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send
from typing_extensions import TypedDict

from evergreen.config import DataConfig, Params, ServeConfig
from evergreen.data.schema import polars_type
from evergreen.errors import EvergreenError
from evergreen.registry.store import Registry
from evergreen.serving.log import LabelCountMismatch, PredictionLog, UnknownRequest, log_rows, utc_now
from evergreen.serving.model import ServingModel, check_compatible, load_champion, predict, predicted_labels
from evergreen.serving.schema import RequestSchema, build_schema, field_errors

logger = logging.getLogger("evergreen.serve")
PUBLIC_PATHS = frozenset({"/health"})


class ServeError(EvergreenError):
    """The service cannot start as configured (no token on a public address, no champion, ...)."""


class _Reject(Exception):
    """An answer other than 200: status, a one-line error and optional per-field details."""

    def __init__(self, status: int, error: str, detail: list[dict[str, str]] | None = None):
        self.status, self.error, self.detail = status, error, detail or []


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def api_token(serve: ServeConfig) -> str | None:
    """The token from `serve.token_env`; `ServeError` when the service would be public without one."""
    token = os.environ.get(serve.token_env) or None
    if token is None and not is_loopback(serve.host):
        raise ServeError(
            f"refusing to serve on {serve.host} without an API token: set the environment variable "
            f"{serve.token_env} (serve.token_env), or bind to 127.0.0.1"
        )
    return token


def max_body_bytes(schema: RequestSchema, data: DataConfig, serve: ServeConfig) -> int:
    """A generous bound on the JSON of `max_batch` valid records; a larger body is a 413 before parsing."""
    per_record = 0
    for name in [*schema.features, *schema.annotations]:
        value = serve.max_string_length * 6 + 2 if data.column(name).type == "str" else 64  # \uXXXX escapes
        per_record += len(name) + 8 + value
    return 2 * serve.max_batch * per_record + 65536  # x2 for whitespace and pretty-printing


class _Guard:
    """ASGI middleware: the API token on every path but /health, checked before the body is read."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            supplied = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, credential = supplied.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(), self.token):
                response = JSONResponse(
                    {"error": "missing or wrong API token (send 'Authorization: Bearer <token>')"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Champion:
    """The model requests are served with, and the watcher that swaps in a newly promoted one."""

    def __init__(self, registry: Registry, data: DataConfig, interval_s: float):
        self.registry, self.data, self.interval_s = registry, data, interval_s
        self.model = self._load(None)
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)

    def _load(self, version: str | None) -> ServingModel:
        model = load_champion(self.registry, threads=1, version=version)
        check_compatible(model, self.data)
        return model

    def refresh(self) -> bool:
        """Swap to the registry's champion if it changed; True when a swap happened."""
        version = self.registry.champion()
        if version is None or version == self.model.version or version == self._failed:
            return False
        try:
            model = self._load(version)  # fully loaded before anyone can see it
        except Exception as exc:  # keep serving the old champion; say why once
            self._failed = version
            logger.error("champion %s cannot be served, still serving %s: %s", version, self.model.version, exc)
            return False
        self.model, self._failed = model, None  # one reference: requests take it once
        logger.warning("now serving champion %s", version)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a registry being rewritten is read again next time
                self.refresh()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


_Feedback = with_config(ConfigDict(extra="forbid"))(
    TypedDict("Feedback", {"request_id": Annotated[str, Field(min_length=1, max_length=64)], "labels": list})
)


def _error_body(reject: _Reject) -> dict[str, Any]:
    return {"error": reject.error, **({"detail": reject.detail} if reject.detail else {})}


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Reject(400, f"the body is not valid JSON: {exc}") from None


def _invalid(exc: ValidationError, prefix: str) -> _Reject:
    errors = field_errors(exc, prefix)
    detail = [{"field": e.field, "message": e.message} for e in errors]
    return _Reject(422, f"{len(errors)} invalid field(s): " + ", ".join(e.field for e in errors[:5]), detail)


def create_app(params: Params, registry_root: Path | str | None = None, log_path: Path | str | None = None) -> FastAPI:
    """The service for `params` (its `serve` section decides host policy, limits and the log).

    Raises `ServeError` or `RegistryError` before anything is bound when it could not serve: no token on a
    public address, no champion, a champion that does not fit the declared features.
    """
    serve, data = params.serve, params.data
    token = api_token(serve)
    schema = build_schema(data, params.clean, serve.max_string_length)
    champion = Champion(Registry(registry_root or params.promote.registry_dir), data, serve.reload_interval_s)
    log = PredictionLog(log_path or serve.log_path)
    dtypes = {c.name: polars_type(c) for c in data.features}
    body_limit = max_body_bytes(schema, data, serve)
    feedback_adapter = TypeAdapter(_Feedback)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        champion.start()
        try:
            yield
        finally:
            champion.stop()
            log.close()

    app = FastAPI(title="Evergreen prediction service", lifespan=lifespan)
    app.add_middleware(_Guard, token=token)

    @app.exception_handler(_Reject)
    async def _rejected(_: Request, reject: _Reject) -> JSONResponse:
        return JSONResponse(_error_body(reject), status_code=reject.status)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > body_limit:
            raise _Reject(413, f"the body is {declared} bytes; at most {body_limit} are accepted")
        chunks, size = [], 0
        async for chunk in request.stream():  # a chunked body has no length to check up front
            size += len(chunk)
            if size > body_limit:
                raise _Reject(413, f"the body exceeds {body_limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def score(body: bytes) -> dict[str, Any]:
        model = champion.model  # taken once: this request is served by this version only
        payload = _parse(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            raise _Reject(422, 'the body must be a JSON object {"records": [{...}, ...]}')
        unknown = sorted(set(payload) - {"records"})
        if unknown:
            detail = [{"field": k, "message": "unknown field; the body holds only 'records'"} for k in unknown]
            raise _Reject(422, f"unknown field(s) in the body: {', '.join(unknown)}", detail)
        if len(payload["records"]) > serve.max_batch:
            raise _Reject(413, f"{len(payload['records'])} records in one request; at most {serve.max_batch}")
        try:
            records = schema.validate_records(payload["records"])
        except ValidationError as exc:
            raise _invalid(exc, "records") from None
        names = model.features
        # row orientation: four times faster than per-column lists for the one-record requests that dominate
        rows = [tuple(r[n] for n in names) for r in records]
        frame = pl.DataFrame(rows, schema={n: dtypes[n] for n in names}, orient="row")
        output = predict(model, frame)
        predictions = predicted_labels(model, output)
        probabilities = None if model.task == "regression" else output.tolist()
        request_id = uuid.uuid4().hex
        try:
            log.write(log_rows(request_id, utc_now(), model.version, records, predictions, probabilities))
        except Exception as exc:  # not logged means not acknowledged
            logger.error("prediction log write failed: %s", exc)
            raise _Reject(503, "the prediction log is unavailable; the request was not served") from None
        response = {"request_id": request_id, "model_version": model.version, "predictions": predictions}
        if probabilities is not None:
            response |= {"classes": model.classes, "probabilities": probabilities}
        return response

    body_schema = {"type": "object", "properties": {"records": schema.json_schema}, "required": ["records"]}

    @app.post("/predict", openapi_extra={"requestBody": {"content": {"application/json": {"schema": body_schema}}}})
    async def predict_route(request: Request) -> JSONResponse:
        """Score a batch of records; each is logged with the request id before the answer is sent."""
        body = await read_body(request)
        return JSONResponse(await run_in_threadpool(score, body))

    def attach(body: bytes) -> dict[str, Any]:
        try:
            feedback = feedback_adapter.validate_python(_parse(body))
        except ValidationError as exc:
            raise _invalid(exc, "body") from None
        try:
            labels = schema.labels.validate_python(feedback["labels"])
        except ValidationError as exc:
            raise _invalid(exc, "labels") from None
        try:
            count = log.attach_labels(feedback["request_id"], labels)
        except UnknownRequest as exc:
            raise _Reject(404, str(exc)) from None
        except LabelCountMismatch as exc:
            raise _Reject(422, str(exc)) from None
        return {"request_id": feedback["request_id"], "labelled": count}

    @app.post("/feedback")
    async def feedback_route(request: Request) -> JSONResponse:
        """Attach ground-truth labels, in record order, to the records of an earlier request."""
        body = await read_body(request)
        return JSONResponse(await run_in_threadpool(attach, body))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and the version being served (no token needed)."""
        return {"status": "ok", "model_version": champion.model.version}

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        """The served version, its model card, its signature and the request schema."""
        model = champion.model
        return {
            "version": model.version,
            "task": model.task,
            "features": model.features,
            "card": model.card,
            "signature": model.signature,
            "request_schema": schema.json_schema,
            "max_batch": serve.max_batch,
        }

    return app
