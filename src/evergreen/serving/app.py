"""The prediction service over HTTP: FastAPI in front of `serving.service.PredictionService`.

Endpoints: `POST /predict` (records in, predictions + model version + request id + out-of-range flags out),
`POST /feedback` (late labels for an earlier request id), `GET /health`, `GET /model` (version, card, input
schema, any champion fallback) and `GET /metrics` (Prometheus' text format; see `serving.metrics`).

What this layer checks, in order, before the service sees a body:
1. the API token (when one is set), before anything else: a 401 is never logged;
2. the content type: `POST` bodies must be sent as `Content-Type: application/json` (parameters such as
   `charset` allowed); anything else, or none, is a 415: a form or text body is not silently read as JSON;
3. the body size, against a bound derived from `serve.max_batch` (413), while it is read. A client that closes
   its connection before its body has arrived is answered nothing and counted apart (`serving.metrics`).
Then `PredictionService` parses, validates, scores and logs (see `serving.service` for the rules), and a
`Rejected` becomes its status and `{"error": ..., "detail": [...]}`.

`/health` needs no token; it answers 200 while predictions can be acknowledged, and 503 with
`"log": "unavailable"` while the prediction log cannot take a write (e.g. another process holds its lock).
Where a token is set, a caller without it gets `{"status": ...}` only (never the log's location or versions).
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import ipaddress
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from evergreen.config import ServeConfig
from evergreen.errors import Rejected, ServeError
from evergreen.serving.metrics import MULTIPROCESS_ENV, RequestMetrics, ServiceMetrics, route_paths
from evergreen.serving.schema import clip
from evergreen.serving.service import PredictionService
from evergreen.workspace import Workspace

__all__ = ["PUBLIC_PATHS", "ServeError", "api_token", "create_app", "is_loopback", "worker_environment"]

PUBLIC_PATHS = frozenset({"/health"})
JSON = "application/json"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def api_token(serve: ServeConfig) -> str | None:
    """The token from `serve.token_env`; `ServeError` when it is blank, or the service would be public without
    one."""
    token = os.environ.get(serve.token_env)
    if token is not None and not token.strip():
        raise ServeError(
            f"the environment variable {serve.token_env} (serve.token_env) holds a blank API token: set a real "
            "token, or unset it to serve on loopback without one"
        )
    if token is None and not is_loopback(serve.host):
        raise ServeError(
            f"refusing to serve on {serve.host} without an API token: set the environment variable "
            f"{serve.token_env} (serve.token_env), or bind to 127.0.0.1"
        )
    return token


def _authorised(headers: list[tuple[bytes, bytes]], token: bytes) -> bool:
    """Whether the request's headers carry `Authorization: Bearer <token>`."""
    scheme, _, credential = dict(headers).get(b"authorization", b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), token)


class _Guard:
    """ASGI middleware: the API token on every path but /health, checked before the body is read."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = self.token is not None and scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS
        if guarded and not _authorised(scope["headers"], self.token):
            response = JSONResponse(
                {"error": "missing or wrong API token (send 'Authorization: Bearer <token>')"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(workspace: Workspace) -> FastAPI:
    """The service for `workspace` (its `serve` section decides host policy, limits, the log and fallback).

    Raises `ServeError` or `RegistryError` before anything is bound when it could not serve: a blank token, no
    token on a public address, no champion, no champion (nor earlier one) that loads and fits the declaration.
    """
    token = api_token(workspace.params.serve)
    metrics = ServiceMetrics()  # this app's own registry: two apps in one process count apart
    service = PredictionService(workspace, on_scored=metrics.observe_scored, on_commit=metrics.observe_commit)
    metrics.watch(lambda: (service.champion.model, service.champion.fallback), workspace.decisions)

    app = FastAPI(title="Evergreen prediction service", lifespan=_lifespan(service))
    app.add_middleware(_Guard, token=token)
    app.add_middleware(RequestMetrics, metrics=metrics)  # added last, so outermost: a 401 is counted too
    app.state.service, app.state.metrics = service, metrics
    app.add_exception_handler(Rejected, _rejected)
    _add_scoring_routes(app, service)
    _add_status_routes(app, service, metrics, token)
    metrics.endpoints = route_paths(app.routes)
    return app


def _lifespan(service: PredictionService) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """The service starts (its log writer) with the app and closes with it."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    return lifespan


async def _rejected(_: Request, reject: Rejected) -> JSONResponse:
    return JSONResponse(reject.body(), status_code=reject.status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's JSON body, at most `limit` bytes: `Rejected` (415) for another content type, (413) for
    a larger body, told by its declared length or while it streams in."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != JSON:
        shown = f"'{clip(content_type)}'" if content_type else "none"
        raise Rejected(415, f"send the body as JSON with 'Content-Type: {JSON}' (got {shown})")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"the body is {declared} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():  # a chunked body has no length to check up front
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _add_scoring_routes(app: FastAPI, service: PredictionService) -> None:
    """`POST /predict` and `POST /feedback`: the routes that take a body."""
    schema = service.schema.json_schema
    body_schema = {"type": "object", "properties": {"records": schema}, "required": ["records"]}

    @app.post("/predict", openapi_extra={"requestBody": {"content": {JSON: {"schema": body_schema}}}})
    async def predict_route(request: Request) -> JSONResponse:
        """Score a batch of records; each is logged with the request id before the answer is sent."""
        body = await _read_body(request, service.body_limit)
        return JSONResponse(await service.predict_async(body))  # scored on the loop, the commit awaited

    @app.post("/feedback")
    async def feedback_route(request: Request) -> JSONResponse:
        """Attach ground-truth labels, in record order, to the records of an earlier request."""
        body = await _read_body(request, service.body_limit)
        return JSONResponse(await run_in_threadpool(service.feedback, body))


def _add_status_routes(app: FastAPI, service: PredictionService, metrics: ServiceMetrics, token: str | None) -> None:
    """`GET /health`, `/model` and `/metrics`: what the service is and how it is doing."""

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        """Liveness, the version served, whether the log takes writes (503 when not), any fallback; no token.

        Where a token is set, a caller without it is told the status only: the rest (the log's location in its
        error, the versions) is for those who may use the service."""
        report = await run_in_threadpool(service.health)
        status_code = 200 if report["log"] == "ok" else 503
        if token is not None and not _authorised(request.scope["headers"], token.encode()):
            return JSONResponse({"status": report["status"]}, status_code=status_code)
        return JSONResponse(report, status_code=status_code)

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        """The served version, its model card, its signature, the request schema and any fallback."""
        return service.model_info()

    @app.get("/metrics")
    async def metrics_route(request: Request) -> Response:
        """Requests, latency, rows scored, out-of-range share, log commits, the model and the last drift check,
        in Prometheus' text format (OpenMetrics when the scraper asks for it)."""
        body, content_type = await run_in_threadpool(metrics.render, request.headers.get("accept"))
        return Response(body, media_type=content_type)


# --------------------------------------------------------------------------------- several processes
SERVE_PARAMS_ENV = "EVERGREEN_SERVE_PARAMS"  # `app_from_env`: the params file of the project to serve
SERVE_HOST_ENV = "EVERGREEN_SERVE_HOST"  # and the address it binds, when `--host` overrode serve.host


@contextlib.contextmanager
def worker_environment(params: Path, host: str) -> Iterator[None]:
    """The environment the `serve.workers` processes start in (set before uvicorn spawns them): what
    `app_from_env` reads, and a fresh folder for prometheus-client's multiprocess mode, so that `/metrics`
    sums every worker (see `serving.metrics`). The folder goes when the workers have stopped."""
    folder = tempfile.mkdtemp(prefix="evergreen-metrics-")
    values = {SERVE_PARAMS_ENV: str(params), SERVE_HOST_ENV: host, MULTIPROCESS_ENV: folder}
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def app_from_env() -> FastAPI:
    """The app of one server process when `serve.workers` > 1: uvicorn starts every worker from this factory
    (an import string, since an app object cannot be sent to another process), and `evergreen serve` sets the
    environment it reads. Every worker loads the champion and commits to the same prediction log."""
    from evergreen.config import with_overrides

    params = Path(os.environ[SERVE_PARAMS_ENV])
    workspace = Workspace.open(params.parent, params)
    host = os.environ.get(SERVE_HOST_ENV)
    if host:
        workspace = Workspace(workspace.root, with_overrides(workspace.params, {"serve.host": host}))
    app = create_app(workspace)
    # what start-up built (the model, the schemas, the app) lives as long as the process: frozen, the garbage
    # collector's full passes no longer scan it. Unfrozen, a full pass took 20-60 ms: the p99's tail
    gc.freeze()
    return app
