"""The FastAPI application: routes, the security guard, errors as ``{"detail": ...}`` and the worker's life."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from huihua.atomic import remove_stale_temp_files
from huihua.errors import HuihuaError
from huihua.server import a1111, native
from huihua.server.config import ServerConfig
from huihua.server.executor import LocalExecutor
from huihua.server.models import Catalog
from huihua.server.security import BodyTooLarge, Guard
from huihua.server.specs import RequestError
from huihua.server.state import ServerState
from huihua.server.store import JobStore
from huihua.server.worker import Worker
from huihua.version import __version__

_LOG = logging.getLogger(__name__)
# The page loads nothing from anywhere but this server.
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")


def build_state(config: ServerConfig) -> ServerState:
    """Open the data folder: the queue database (recovering from a crash), the catalog, the worker."""
    for folder in (config.data_dir, config.images_dir, config.uploads_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for folder in (config.images_dir, config.uploads_dir):
        remove_stale_temp_files(folder)  # a kill during an atomic write leaves only its temp file
    store = JobStore(config.data_dir / "queue.sqlite3")
    interrupted = store.recover()
    if interrupted:
        _LOG.warning("marked %d job(s) interrupted: the server stopped while they ran", len(interrupted))
    catalog = Catalog(config)
    executor = LocalExecutor(config, catalog)
    return ServerState(config, store, catalog, executor, Worker(store, executor, config.preview_every))


def create_app(config: ServerConfig, state: ServerState | None = None) -> FastAPI:
    """The ASGI app for ``config`` (``state`` for tests that want to reach inside)."""
    shared = state or build_state(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shared.worker.start()
        try:
            yield
        finally:
            shared.worker.stop()

    app = FastAPI(title="huihua", version=__version__, lifespan=lifespan,
                  description="AUTOMATIC1111-compatible routes (/sdapi/v1) and a durable job queue (/api/v1)")
    app.state.huihua = shared
    app.include_router(a1111.router)
    app.include_router(a1111.controlnet_router)
    app.include_router(native.router)
    web = Path(__file__).with_name("web")
    app.mount("/static", StaticFiles(directory=web), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(web / "index.html", headers={"content-security-policy": _CSP})

    @app.exception_handler(RequestError)
    async def request_error(_: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(HuihuaError)
    async def huihua_error(_: Request, e: HuihuaError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, e: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=413)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"detail": "body: not valid JSON"}, status_code=422)
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials=True)
    app.add_middleware(Guard, config=config)
    return app
