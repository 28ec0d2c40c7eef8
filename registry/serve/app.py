"""The HTTP layer of the localization service (FastAPI): routes, the JSON error answers, the request-size guard, the
bearer-token check and the page's static files at `/`. The work is done by `Service` (registry.serve.service)."""
from __future__ import annotations

import asyncio
import hmac
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, List, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .batcher import QueueFull
from .service import Service
from .streams import StreamsFull, check_stream_id
from .uploads import BadRequest, Upload, check_file_count, check_k, client_name, decode_upload, parse_flag, parse_places

DECODE_SLOTS = 2
STATIC = Path(__file__).resolve().parent / "static"
_FILES_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "1..16 images"},
        "places": {"type": "string", "description": "add only: a JSON list of place ids, one per file"}}}}}}}


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: refuses a request body over `max_body` bytes with 413 (by its Content-Length, or once that
    many bytes have arrived), and records every request in the metrics by route and status."""

    def __init__(self, app: Any, service: Service, paths: frozenset = frozenset()) -> None:
        self.app, self.service, self.paths = app, service, paths  # paths: the routes without parameters

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), [500]
        cap = self.service.config.limits.max_body
        too_large = (f"the request body is larger than this server's cap of {cap:,} bytes (--max-body): send fewer "
                     "or smaller images per request")
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > cap:
            await _error(413, too_large, {"Connection": "close"})(scope, receive, send)
            self._observe(scope, 413, started)
            return
        seen = [0]

        async def capped_receive():
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > cap:
                raise HTTPException(413, too_large)
            return message

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, capped_receive, recording_send)
        finally:  # an exception is answered 500 by the outer error middleware: counted as that
            self._observe(scope, status[0], started)

    def _observe(self, scope, status: int, started: float) -> None:
        route = getattr(scope.get("route"), "path", None)
        label = route if route is not None else scope["path"] if scope["path"] in self.paths else "unmatched"
        self.service.metrics.observe_request(label or "/", status, time.monotonic() - started)


def _check_token(request: Request, token: Optional[str]) -> None:
    if token is None:
        raise BadRequest(403, "this server is read-only: adding images needs a server started with --token-file")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise BadRequest(401, "adding images needs the server's token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise BadRequest(403, "the bearer token is not this server's token")


async def _read_uploads(request: Request, service: Service, decode: asyncio.Semaphore) -> tuple:
    """The request's decoded image files and its form, or BadRequest naming what is wrong."""
    limits = service.config.limits
    try:
        form = await request.form(max_files=limits.max_files, max_fields=8)
    except HTTPException as err:
        if err.status_code == 413:
            raise
        raise BadRequest(400, f"cannot read the multipart form ({err.detail}): send 1 to {limits.max_files} image "
                              "files as multipart/form-data field 'images'") from None
    files = [f for f in form.getlist("images") if hasattr(f, "read")]
    others = sorted({k for k, v in form.multi_items() if hasattr(v, "read") and k != "images"})
    if not files and others:
        raise BadRequest(400, f"the files are in field(s) {others}: send them in the multipart field 'images'")
    check_file_count(len(files), limits)
    uploads: List[Upload] = []
    async with decode:
        for i, f in enumerate(files):
            data = await f.read()
            uploads.append(await run_in_threadpool(decode_upload, data, client_name(f.filename, i), limits))
    return uploads, form


def _need_ready(service: Service) -> None:
    if not service.ready:
        raise BadRequest(503, service.load_error or "the map is still loading: retry in a few seconds")


def _info_routes(app: FastAPI, service: Service) -> None:
    def need_ready() -> None:
        _need_ready(service)

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict:
        return {"alive": True}

    @app.get("/readyz", summary="the map is loaded (503 while loading)")
    async def readyz() -> Any:
        if not service.ready:
            return _error(503, service.load_error or "loading the map", {"Retry-After": "2"})
        return {"ready": True, "map_version": service.map.version, "count": service.map.count}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/v1/map", summary="the served map: Map.info() with the sequence length and the batch size")
    async def map_info() -> dict:
        need_ready()
        return await run_in_threadpool(service.info)

    @app.get("/v1/map/images/{row}", summary="a map image by its row id")
    async def map_image(row: int) -> Any:
        need_ready()
        try:
            path = await run_in_threadpool(service.image_path, row)
        except IndexError:
            raise BadRequest(404, f"no map image has row {row}: rows are 0..{service.map.count - 1}") from None
        if not Path(path).is_file():
            raise BadRequest(404, f"the image file of row {row} is missing from the map's images")
        return FileResponse(path)


def _query_routes(app: FastAPI, service: Service) -> None:
    def need_ready() -> None:
        _need_ready(service)

    @app.post("/v1/localize", summary="localize 1..16 images against the map", openapi_extra=_FILES_FORM)
    async def localize(request: Request, k: int = Query(5, description="matches per image, 1..100"),
                       stream: Optional[str] = Query(None, description="a client's frame stream id"),
                       heatmap: str = Query("0", description="1: add the attention heat map")) -> dict:
        need_ready()
        if stream is not None:
            try:
                check_stream_id(stream)
            except ValueError as err:
                raise BadRequest(422, str(err)) from None
        want_heatmap = parse_flag(heatmap, "heatmap")
        check_k(k, service.map.count)
        started = time.monotonic()
        uploads, _ = await _read_uploads(request, service, app.state.decode)
        decode_ms = (time.monotonic() - started) * 1000
        futures = service.batcher.submit([u.image for u in uploads], [u.image.width * u.image.height for u in uploads])
        encoded = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        answer = await run_in_threadpool(service.answer, uploads, encoded, k, stream, want_heatmap)
        answer["timing_ms"] = {"decode": decode_ms, **answer["timing_ms"]}
        return answer

    @app.delete("/v1/streams/{stream}", summary="forget a frame stream (404 when there is no live one)")
    async def drop_stream(stream: str) -> dict:
        if not service.streams.drop(stream):
            raise BadRequest(404, f"no live stream {stream[:80]!r}: it expired or never existed")
        return {"dropped": stream}

    @app.post("/v1/map/images", summary="add images to the map (bearer token)", openapi_extra=_FILES_FORM)
    async def add_images(request: Request) -> dict:
        need_ready()
        _check_token(request, service.token)
        uploads, form = await _read_uploads(request, service, app.state.decode)
        places = parse_places(form.get("places") if isinstance(form.get("places"), str) else None, len(uploads))
        return await run_in_threadpool(service.add, uploads, places)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {"Retry-After": "2"} \
            if err.status in (409, 503) else None
        return _error(err.status, str(err), headers)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, err: QueueFull) -> JSONResponse:
        return _error(503, str(err), {"Retry-After": str(err.retry_after)})

    @app.exception_handler(StreamsFull)
    async def streams_full(request: Request, err: StreamsFull) -> JSONResponse:
        return _error(503, str(err), {"Retry-After": str(err.retry_after)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        message = str(err.detail)
        if err.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}; the API is listed at /docs"
        return _error(err.status_code, message, getattr(err, "headers", None))

    @app.exception_handler(Exception)  # answered as JSON; the ASGI server logs the traceback
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"the server failed on this request ({type(err).__name__}: {str(err)[:300]}); the "
                           "traceback is in the server's log")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = [f"{' '.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')} (got {e.get('input')!r})"
                 for e in err.errors()]
        return _error(422, "; ".join(parts) + "; see /docs for each parameter")


def build_app(service: Service) -> FastAPI:
    """The FastAPI app around `service`; the map is opened in a thread when the app starts."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.decode = asyncio.Semaphore(DECODE_SLOTS)  # requests decoding images at once
        threading.Thread(target=service.load, name="vpr-map-load", daemon=True).start()
        yield
        service.close()

    app = FastAPI(title="VPR localization service", lifespan=lifespan,
                  description="Localize images against a map built with `vpr map build`: POST /v1/localize.")
    app.state.service = service
    _handlers(app)
    _info_routes(app, service)
    _query_routes(app, service)
    paths = frozenset(r.path for r in app.routes if "{" not in getattr(r, "path", "{"))
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    app.add_middleware(Guard, service=service, paths=paths)
    return app
