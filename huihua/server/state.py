"""What the routes share: the configuration, the queue, the worker and the executor (one per app)."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path

from huihua.server.config import ServerConfig
from huihua.server.executor import LocalExecutor
from huihua.server.models import Catalog
from huihua.server.specs import RequestError
from huihua.server.store import TERMINAL, Job, JobStore
from huihua.server.worker import Worker


@dataclass
class ServerState:
    config: ServerConfig
    store: JobStore
    catalog: Catalog
    executor: LocalExecutor
    worker: Worker

    async def wait(self, job_id: str, poll: float = 0.05) -> Job:
        """The job once it has ended (polls the database without blocking the event loop)."""
        while True:
            job = await asyncio.to_thread(self.store.get, job_id)
            if job is None:
                raise RequestError(f"job {job_id}: deleted while waiting", 404)
            if job.status in TERMINAL:
                return job
            await asyncio.sleep(poll)

    def image_path(self, name: str) -> Path:
        """The file of an image name this server wrote; 404 for anything else (no request string is joined
        to a folder unless it is one of a job's own result names)."""
        job_id, sep, _ = name.partition("-")
        if not sep or len(job_id) != 32 or not all(c in "0123456789abcdef" for c in job_id):
            raise RequestError("image: not found", 404)
        job = self.store.get(job_id)
        images = job.result.get("images", []) if job is not None else []
        if not isinstance(images, list) or name not in images:
            raise RequestError("image: not found", 404)
        folder = self.config.images_dir.resolve()
        path = folder / name
        if path.is_symlink() or path.resolve().parent != folder or not path.is_file():
            raise RequestError("image: not found", 404)
        return path

    def image_base64(self, name: str) -> str:
        return base64.b64encode(self.image_path(name).read_bytes()).decode("ascii")
