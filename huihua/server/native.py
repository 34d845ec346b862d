"""The native job API (``/api/v1``): a durable queue with ids, per-job cancel, history and SSE events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse, JSONResponse
from sse_starlette.sse import EventSourceResponse

from huihua.assets import bundled_adapter_dir
from huihua.server.specs import RequestError, decode_image, native_spec, store_upload
from huihua.server.state import ServerState
from huihua.server.store import TERMINAL, DuplicateKey, JsonDict, JsonValue
from huihua.version import __version__

router = APIRouter(prefix="/api/v1", tags=["jobs"])


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.huihua
    return state


def _enqueue(state: ServerState, body: object) -> tuple[int, JsonDict]:
    kind, spec, priority, client_id, key = native_spec(body, state.config.limits, state.config.uploads_dir)
    limit = state.config.limits.max_queued_per_client
    if client_id and state.store.count("queued", client_id) >= limit:
        raise RequestError(f"client_id {client_id!r}: already {limit} jobs queued (the per-client limit)", 429)
    try:
        job = state.store.add(kind, spec, priority=priority, client_id=client_id, idempotency_key=key)
    except DuplicateKey as e:  # the same key never queues twice: answer with the job it queued
        return 200, {"id": e.job.id, "status": e.job.status, "queue_position": state.store.queue_position(e.job),
                     "duplicate": True}
    state.worker.wake()
    return 202, {"id": job.id, "status": job.status, "queue_position": state.store.queue_position(job)}


@router.post("/jobs", status_code=202, response_model=None)
async def create_job(request: Request, body: Any = Body(default=None)) -> JSONResponse:  # noqa: B008
    status, out = await asyncio.to_thread(_enqueue, _state(request), body)
    return JSONResponse(out, status_code=status)


@router.post("/jobs/batch", status_code=202, response_model=None)
async def create_jobs(request: Request, body: Any = Body(default=None)) -> JSONResponse:  # noqa: B008
    state = _state(request)
    items = body.get("jobs") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        raise RequestError("body: expected a non-empty list of jobs (or {\"jobs\": [...]})")
    if len(items) > state.config.limits.max_batch_jobs:
        raise RequestError(f"body: at most {state.config.limits.max_batch_jobs} jobs per batch", 413)
    for i, item in enumerate(items):  # all are checked before any is queued
        try:
            await asyncio.to_thread(native_spec, item, state.config.limits, state.config.uploads_dir)
        except RequestError as e:
            raise RequestError(f"jobs[{i}].{e}", e.status) from None
    out = [(await asyncio.to_thread(_enqueue, state, item))[1] for item in items]
    return JSONResponse({"jobs": out}, status_code=202)


def _job_json(state: ServerState, job_id: str) -> JsonDict:
    job = state.store.get(job_id)
    if job is None:
        raise RequestError(f"job {job_id[:64]}: not found", 404)
    return job.to_json(state.store.queue_position(job))


@router.get("/jobs/{job_id}", response_model=None)
async def get_job(request: Request, job_id: str) -> JsonDict:
    return await asyncio.to_thread(_job_json, _state(request), job_id)


@router.get("/jobs", response_model=None)
async def list_jobs(request: Request, status: str | None = None, limit: int = 50,
                    cursor: int | None = None) -> JsonDict:
    state = _state(request)
    if status is not None and status not in {"queued", "running", *TERMINAL}:
        raise RequestError(f"status: unknown {status[:40]!r}")
    if not 1 <= limit <= 500:
        raise RequestError("limit: from 1 to 500")
    jobs = await asyncio.to_thread(state.store.history, status, limit, cursor)
    items: list[JsonValue] = [j.to_json() for j in jobs]
    return {"jobs": items, "next_cursor": jobs[-1].seq if len(jobs) == limit else None}


@router.post("/jobs/{job_id}/cancel", response_model=None)
async def cancel_job(request: Request, job_id: str) -> JsonDict:
    """Cancel exactly this job: a queued one at once, a running one at its next sampler step."""
    state = _state(request)
    job = await asyncio.to_thread(state.store.get, job_id)
    if job is None:
        raise RequestError(f"job {job_id[:64]}: not found", 404)
    if job.status == "queued" and await asyncio.to_thread(state.store.cancel_queued, job_id):
        return {"id": job_id, "status": "canceled"}
    if job.status == "running" and state.worker.request_stop(job_id, "canceled"):
        return {"id": job_id, "status": "canceling"}
    current = await asyncio.to_thread(state.store.get, job_id)
    return {"id": job_id, "status": current.status if current else "deleted"}


@router.post("/jobs/{job_id}/retry", response_model=None)
async def retry_job(request: Request, job_id: str) -> JsonDict:
    state = _state(request)
    if not await asyncio.to_thread(state.store.retry, job_id):
        raise RequestError(f"job {job_id[:64]}: only an interrupted, failed or canceled job can be retried", 409)
    state.worker.wake()
    return await asyncio.to_thread(_job_json, state, job_id)


@router.delete("/jobs/{job_id}", response_model=None)
async def delete_job(request: Request, job_id: str) -> JsonDict:
    state = _state(request)
    job = await asyncio.to_thread(state.store.delete, job_id)
    if job is None:
        raise RequestError(f"job {job_id[:64]}: not found or not finished", 404)
    for name in job.result.get("images", []) or []:  # type: ignore[union-attr]
        path = state.config.images_dir / f"{job.id}-{str(name).rsplit('-', 1)[-1]}"
        if path.name == name and path.is_file() and not path.is_symlink():
            path.unlink()
    return {"id": job_id, "deleted": True}


@router.post("/queue/pause", response_model=None)
async def pause(request: Request) -> JsonDict:
    _state(request).worker.paused.set()
    return await queue(request)


@router.post("/queue/resume", response_model=None)
async def resume(request: Request) -> JsonDict:
    state = _state(request)
    state.worker.paused.clear()
    state.worker.wake()
    return await queue(request)


@router.get("/queue", response_model=None)
async def queue(request: Request) -> JsonDict:
    state = _state(request)
    queued = await asyncio.to_thread(state.store.queued)
    ids: list[JsonValue] = [j.id for j in queued]
    return {"paused": state.worker.paused.is_set(), "running": state.worker.live.job_id, "queued": ids}


async def _events(state: ServerState, request: Request, job_id: str | None, last_id: int) -> AsyncIterator[JsonDict]:
    terminal = {"succeeded", "failed", "canceled", "interrupted", "deleted"}
    while not await request.is_disconnected():
        events = await asyncio.to_thread(state.store.events_after, last_id, job_id)
        for event in events:
            last_id = event.id
            yield {"id": str(event.id), "event": event.type, "data": json.dumps(event.data)}
            if job_id is not None and event.type in terminal:
                return
        if not events:
            await asyncio.sleep(0.1)


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    return int(raw) if raw.isdigit() else 0


@router.get("/jobs/{job_id}/events", response_model=None)
async def job_events(request: Request, job_id: str) -> EventSourceResponse:
    state = _state(request)
    if await asyncio.to_thread(state.store.get, job_id) is None and _last_event_id(request) == 0:
        raise RequestError(f"job {job_id[:64]}: not found", 404)
    return EventSourceResponse(_events(state, request, job_id, _last_event_id(request)), ping=15)


@router.get("/events", response_model=None)
async def all_events(request: Request) -> EventSourceResponse:
    """Every job's events from now on (or, with ``Last-Event-ID``, from after that event)."""
    state = _state(request)
    start = _last_event_id(request) or await asyncio.to_thread(state.store.last_event_id)
    return EventSourceResponse(_events(state, request, None, start), ping=15)


@router.get("/images/{name}", response_model=None)
async def image(request: Request, name: str) -> FileResponse:
    path = await asyncio.to_thread(_state(request).image_path, name)
    return FileResponse(path, media_type="image/png")


@router.post("/uploads", status_code=201, response_model=None)
async def upload(request: Request, body: Any = Body(default=None)) -> JsonDict:  # noqa: B008
    """``{"image": base64}`` → ``{"name": ...}``: decoded, checked, re-encoded as PNG under a new name."""
    state = _state(request)
    data = body.get("image") if isinstance(body, dict) else None
    picture = await asyncio.to_thread(decode_image, str(data or ""), "image", state.config.limits)
    name = await asyncio.to_thread(store_upload, picture, state.config.uploads_dir)
    return {"name": name, "width": picture.width, "height": picture.height}


@router.get("/health", response_model=None)
async def health(request: Request) -> JsonDict:
    state = _state(request)
    entry = state.executor.entry
    return {"status": "ok", "version": __version__, "model": entry.title if entry else None,
            "queued": await asyncio.to_thread(state.store.count, "queued"), "running": state.worker.live.job_id,
            "paused": state.worker.paused.is_set()}


@router.get("/models", response_model=None)
async def models(request: Request) -> JsonDict:
    state = _state(request)

    def collect() -> JsonDict:
        catalog = state.catalog
        networks = catalog.networks()
        bundled = bundled_adapter_dir()

        def files(paths: list[Any]) -> list[JsonValue]:
            return [{"name": p.stem, "file": p.name, "bundled": p.parent == bundled} for p in paths]

        return {
            "checkpoints": [{"name": e.name, "title": e.title, "hash": e.short_hash, "sha256": e.sha256}
                            for e in catalog.checkpoints()],
            "loras": files(networks.list_loras()), "embeddings": files(networks.list_embeddings()),
            "controlnets": files(catalog.controlnets()),
            "upscalers": ["Lanczos", *(e.name for e in catalog.upscalers())],
        }

    return await asyncio.to_thread(collect)
