"""The one worker: takes queued jobs in priority then arrival order and runs them, off the event loop.

It keeps a live view of the running job (step, total, latest preview) that ``/sdapi/v1/progress``
reads without touching the database, and per-job stop flags that cancel exactly one job between
sampler steps.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from PIL import Image

from huihua.server.executor import Executor, JobStopped, Report, encode_jpeg
from huihua.server.store import JobStore, JsonDict

_LOG = logging.getLogger(__name__)


@dataclass
class Live:
    """What the running job is doing now (read by the progress route)."""

    job_id: str | None = None
    route: str = ""
    step: int = 0
    total: int = 0
    started: float = 0.0
    preview: Image.Image | None = None
    job_timestamp: str = ""


class Worker:
    """A daemon thread over ``store`` running jobs with ``executor``."""

    def __init__(self, store: JobStore, executor: Executor, preview_every: int = 2) -> None:
        self.store = store
        self.executor = executor
        self.preview_every = max(1, preview_every)
        self.live = Live()
        self.paused = threading.Event()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._stops: dict[str, str] = {}
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="huihua-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        self._wake.set()
        for job_id in list(self._stops) + ([self.live.job_id] if self.live.job_id else []):
            self.request_stop(job_id, "interrupted")
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self, job_id: str, status: str) -> bool:
        """Stop the running job ``job_id`` at its next step (False when it is not the running job)."""
        with self._guard:
            if self.live.job_id != job_id:
                return False
            self._stops[job_id] = status
            return True

    def _should_stop(self, job_id: str) -> str | None:
        with self._guard:
            return self._stops.get(job_id)

    def _loop(self) -> None:
        while not self._halt.is_set():
            job = None if self.paused.is_set() else self.store.claim_next()
            if job is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            self._run(job.id)

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None:
            return
        with self._guard:
            self.live = Live(job.id, job.route, 0, 0, time.time(), None, time.strftime("%Y%m%d%H%M%S"))
        last_preview = [-self.preview_every]

        def step(done: int, total: int) -> None:
            self.live.step, self.live.total = done, total
            preview = None
            if self.live.preview is not None and done - last_preview[0] >= self.preview_every:
                last_preview[0] = done
                preview = encode_jpeg(self.live.preview)
            self.store.progress(job.id, done, total, preview)

        def preview(image: Image.Image) -> None:
            self.live.preview = image

        report = Report(step=step, preview=preview, should_stop=lambda: self._should_stop(job.id))
        try:
            output = self.executor.run(job, report)
        except JobStopped as e:
            self.store.finish(job.id, "canceled" if e.status == "canceled" else "interrupted",
                              error=str(e) if e.status != "canceled" else None)
        except MemoryError:
            self.store.finish(job.id, "failed", error="out of memory: try a smaller size or batch")
        except Exception as e:  # one job's failure never stops the worker
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "out of memory" in message.lower():
                message = f"out of memory: {message}"
            _LOG.warning("job %s failed: %s", job.id, message, exc_info=not _is_expected(e))
            self.store.finish(job.id, "failed", error=message[:1000])
        else:
            result: JsonDict = {"images": list(output.images), "infotexts": list(output.infotexts), "info": output.info}
            self.store.finish(job.id, "succeeded", result=result)
        finally:
            with self._guard:
                self._stops.pop(job.id, None)
                self.live = Live()


def _is_expected(error: Exception) -> bool:
    from_huihua = type(error).__module__.startswith("huihua")
    return from_huihua
