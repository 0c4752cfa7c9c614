"""The HTTP routes (FastAPI) of a `Service`: the web page, the API, health and metrics.

    GET  /                          the web page (static/: plain HTML, CSS and JS)
    POST /v1/stylize                an image in (raw body or multipart field `image`),
                                    the stylized image out
    GET  /v1/models                 the loaded models (JSON)
    GET  /v1/models/{name}/style    a model's style thumbnail (JPEG)
    GET  /v1/models/{name}/onnx     the model as an ONNX file for the page's "On this
                                    device" (`deploy.web`; made on first request, kept)
    GET  /ort/{file}                the browser runtime's files (onnxruntime-web, from
                                    web/node_modules after `npm ci` in web/)
    GET  /v1/info                   the limits a client should know (JSON)
    GET  /healthz, /readyz          process alive / models loaded and compiled
    GET  /metrics                   Prometheus
    GET  /docs, /openapi.json       the API's OpenAPI description (FastAPI's)

`create_app(service)` builds the app; its lifespan starts the service's workers and, on
shutdown, finishes what is queued. Every error is JSON,
`{"error": {"status", "code", "message"}}`, with its status. The request body is read here
with the upload limit enforced while it streams in (413 before the rest is read); from
there on the request is the service's (`Service.stylize`).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fnst_jax import stroke
from fnst_jax.deploy import web
from fnst_jax.errors import UserError
from fnst_jax.serve import images
from fnst_jax.serve.errors import ServiceError
from fnst_jax.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fnst_jax.serve.metrics import Metrics
from fnst_jax.serve.models import ServedModel
from fnst_jax.serve.service import Service, StylizeOptions

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the response
TIMING_HEADERS = [
    "X-Model",
    "X-Batch-Size",
    "X-Network-Time-Ms",
    "X-Queue-Time-Ms",
    "X-Working-Size",
    "X-Detail-Size",
]
# The page loads nothing from elsewhere; the result and the webcam are blob: URLs. Running
# on the device compiles the runtime's WebAssembly ('wasm-unsafe-eval': WebAssembly only,
# not JavaScript's eval), and cross-origin isolation lets it use several threads.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "style-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    **web.ISOLATION_HEADERS,
}
# The browser's files: the runtime changes only with web/package-lock.json, a model's file
# with its model file (its URL carries the file's version).
BROWSER_FILE_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "Cross-Origin-Resource-Policy": "same-origin",
    **web.ISOLATION_HEADERS,
}
_ROUTES = {"/", "/v1/stylize", "/v1/models", "/v1/info", "/healthz", "/readyz", "/metrics"}


def _route_label(path: str) -> str:
    """A bounded label for the requests metric."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{name}/onnx" if path.endswith("/onnx") else "/v1/models/{name}/style"
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/ort/"):
        return "/ort"
    return "other"


class _CountResponses:
    """ASGI middleware: every response into the requests metric, and the latency of
    successful stylize requests into the latency histogram."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # if the app fails before answering

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = _route_label(scope["path"])
            self.metrics.observe_response(route, status)
            if route == "/v1/stylize" and status == 200:
                self.metrics.latency.observe(time.monotonic() - started)


def _error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (413) as soon as that is known."""
    declared = request.headers.get("content-length")
    too_large = ServiceError(
        413, "upload_too_large", f"the upload is larger than this service's {limit:,}-byte limit"
    )
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _check_api_key(request: Request, api_key: str | None) -> None:
    """401 unless the request carries the key (`Authorization: Bearer KEY` or
    `X-API-Key: KEY`), when one is set."""
    if not api_key:
        return
    given = request.headers.get("x-api-key") or ""
    authorization = request.headers.get("authorization") or ""
    if authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ServiceError(
            401,
            "unauthorized",
            "this service needs an API key: send Authorization: Bearer KEY or X-API-Key: KEY",
            {"WWW-Authenticate": "Bearer"},
        )


_STYLIZE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image: the raw body (Content-Type: image/...) or the "
        "multipart/form-data field `image`. JPEG, PNG, WebP, BMP, TIFF or PPM.",
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
        },
    }
}
_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {content_type: {} for content_type in images.CONTENT_TYPES.values()},
        "description": "The stylized image. X-Batch-Size: requests in its network call; "
        "X-Network-Time-Ms: the network's time (both passes'); X-Working-Size: the "
        "WIDTHxHEIGHT the network ran at (the stroke scale's); X-Detail-Size: its detail "
        "pass's, when it had one; Server-Timing: decode, queue, network, encode.",
    },
    **{
        status: {"description": description}
        for status, description in {
            400: "empty, corrupt or truncated image; malformed multipart body",
            401: "API key missing or wrong",
            404: "unknown model",
            413: "upload or image larger than the limits",
            415: "not an image, or an unsupported Content-Type",
            503: "queue full, starting or shutting down (Retry-After)",
            504: "not done within the time limit",
        }.items()
    },
}


def create_app(service: Service) -> FastAPI:
    """The FastAPI app serving `service` (see the module docstring)."""
    settings = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="fnst_jax fast style transfer",
        description="Stylize images with the loaded fast-neural-style models.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key"],
            expose_headers=[*TIMING_HEADERS, "Server-Timing", "Retry-After"],
        )
    app.add_middleware(_CountResponses, metrics=service.metrics)
    _add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_SECURITY_HEADERS)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Models loaded and compiled (503 while starting or draining)")
    async def readyz() -> JSONResponse:
        body = {"status": service.state, "models": list(service.models)}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/info", summary="Limits and options a client should know")
    async def info() -> dict[str, Any]:
        return {**service.info(), "browser": web.browser_info()}

    @app.get("/v1/models", summary="The loaded models")
    async def models() -> list[dict[str, Any]]:
        return [_describe_with_browser_file(model) for model in service.models.values()]

    @app.get(
        "/v1/models/{name}/style",
        summary="A model's style thumbnail (JPEG)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "none"}},
    )
    async def style_thumbnail(name: str) -> Response:
        model = service.model(name)
        if model.thumbnail is None:
            raise ServiceError(404, "no_thumbnail", f"model {name!r} has no style thumbnail")
        return Response(
            model.thumbnail, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
        )

    _add_browser_routes(app, service)

    @app.post(
        "/v1/stylize",
        summary="Stylize an image",
        response_class=Response,
        responses=_IMAGE_RESPONSES,
        openapi_extra=_STYLIZE_BODY,
    )
    async def stylize(
        request: Request,
        model: str | None = Query(None, description="A loaded model's name (optional with one)"),
        size: int | None = Query(
            None, ge=1, le=65536, description="Longest side of the output in px (default: as is)"
        ),
        preserve_color: bool = Query(False, description="Keep the input's colours"),
        format: Literal["jpg", "png", "webp"] | None = Query(
            None, description="Output format (default: the input's jpg/png/webp, else png)"
        ),
        quality: int = Query(95, ge=1, le=100, description="JPEG/WebP quality"),
        mix: str | None = Query(
            None,
            max_length=1000,
            description="Multi-style models: a mix of the model's styles instead of the entry's "
            "own, NAME:WEIGHT,NAME:WEIGHT (weights normalised to sum to 1; names as in the "
            "model's `styles`)",
        ),
        stroke_scale: str = Query(
            stroke.AUTO,
            max_length=32,
            description="Stroke size S: the network runs at the output size / S, so its "
            "strokes are S times their trained size (1: at the output size). 'auto': at the "
            "model's native size (`native_size` in /v1/models), strokes proportional to the "
            "image; a model without one runs at S = 1",
        ),
        upsampler: Literal["bicubic", "guided"] = Query(
            stroke.DEFAULT_UPSAMPLER,
            description="How a result stylized below the output size is brought to it "
            "(guided: a guided filter on the full-size photo, sharper photo edges)",
        ),
        detail_pass: bool = Query(
            True,
            description="Below the output size, a second network pass over the upsampled "
            "result at twice the working size (at most the output size): the model's texture "
            "at screen scale (X-Detail-Size says where it ran)",
        ),
        keep_brightness: bool = Query(
            True,
            description="Give the output the photo's mean brightness with a tone curve (the "
            "network cannot see it: a night photo stays dark); false: the network's own",
        ),
    ) -> Response:
        arrived = time.monotonic()
        service.check_ready()
        _check_api_key(request, settings.api_key)
        options = StylizeOptions(
            model,
            size,
            preserve_color,
            format,
            quality,
            mix,
            stroke_scale=_stroke_scale(stroke_scale),
            upsampler=upsampler,
            detail_pass=detail_pass,
            keep_brightness=keep_brightness,
        )
        service.style_mix(service.model(model), mix)  # 404 / 400 before the body is read
        body = await _read_body(request, settings.max_upload_bytes)
        reply = await service.stylize(
            body, request.headers.get("content-type"), options, arrived, _client_gone(request)
        )
        if reply is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return Response(reply.body, media_type=reply.content_type, headers=reply.headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_browser_routes(app: FastAPI, service: Service) -> None:
    """What the page's "On this device" downloads: each model's ONNX file and the runtime."""
    browser_files = web.OnnxCache()

    @app.get(
        "/v1/models/{name}/onnx",
        summary="A model as an ONNX file, to stylize in the browser (onnxruntime-web)",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    async def browser_file(
        request: Request,
        name: str,
        dtype: Literal["float16", "float32"] = Query(
            web.DEFAULT_DTYPE, description="The file's weights and activations"
        ),
    ) -> Response:
        _check_api_key(request, service.settings.api_key)  # the model is the service's too
        model = service.model(name)
        key = (model.path.resolve(), dtype)  # a multi-style model's styles share one file
        data = await run_in_threadpool(browser_files.get, key, lambda: _browser_file(model, dtype))
        headers = {
            **BROWSER_FILE_HEADERS,
            "Content-Disposition": f'attachment; filename="{model.name}.onnx"',
        }
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get("/ort/{file_name}", include_in_schema=False)
    async def runtime_file(file_name: str) -> FileResponse:
        if file_name not in web.RUNTIME_FILES:
            raise ServiceError(404, "not_found", f"no runtime file {file_name!r}")
        problem = web.runtime_problem()
        if problem:
            raise ServiceError(404, "no_browser_runtime", problem)
        return FileResponse(
            web.RUNTIME_DIR / file_name,
            media_type=web.RUNTIME_CONTENT_TYPES[Path(file_name).suffix],
            headers=BROWSER_FILE_HEADERS,
        )


def _stroke_scale(text: str) -> float | None:
    """`?stroke_scale=` parsed (None: auto); 422 naming the parameter otherwise."""
    try:
        return stroke.parse_scale(text)
    except stroke.StrokeScaleError as e:
        raise ServiceError(422, "invalid_parameter", f"stroke_scale: {e}") from None


def _describe_with_browser_file(model: ServedModel) -> dict[str, Any]:
    """`GET /v1/models`'s entry, with `onnx`: where the page downloads the model to run it
    on the visitor's device (the URL names the model file's version, so browsers keep it
    until the file changes), and the entry's column of a multi-style file's style input."""
    entry = model.describe()
    stat = model.path.stat()
    version = f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
    style_index = int(model.stylizers[0].style.argmax()) if entry["styles"] else None
    entry["onnx"] = {
        "url": f"/v1/models/{model.name}/onnx?dtype={web.DEFAULT_DTYPE}&v={version}",
        "dtype": web.DEFAULT_DTYPE,
        "style_index": style_index,
    }
    return entry


def _browser_file(model: ServedModel, dtype: str) -> bytes:
    """The model's ONNX file for the browser, made and verified (seconds; runs in a
    worker thread, once per model file and dtype)."""
    from fnst_jax.deploy.cli import model_properties  # what an exported file records

    try:
        properties = model_properties(model.path, model.metadata, model.pad)
        return web.model_file_onnx(model.path, properties, dtype)
    except (UserError, OSError) as e:
        log.warning("model %s: no ONNX file for the browser: %s", model.name, e)
        raise ServiceError(
            500, "browser_file_failed", f"model {model.name!r} cannot run in the browser: {e}"
        ) from None


def _client_gone(request: Request) -> Any:
    """An awaitable factory that returns once the client has disconnected (after the body
    is read, the only message the server still sends is the disconnect)."""

    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return wait


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as `{"error": {"status", "code", "message"}}`."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return _error_response(
            ServiceError(error.status_code, code, str(error.detail), dict(error.headers or {}))
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'][1:])}: {problem['msg']}"
            for problem in error.errors()
        )
        return _error_response(ServiceError(422, "invalid_parameter", problems))
