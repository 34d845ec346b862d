"""The job queue and history in SQLite (WAL): jobs survive a crash, and every event has a rising id.

One connection per thread (SQLite's rule), one lock around writes. A job is written before the
server answers ``202``; the worker takes jobs in priority, then arrival order. After a crash,
``recover`` marks the job that was running as ``interrupted`` (it can be retried) and leaves the
queued ones queued.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["queued", "running", "succeeded", "failed", "canceled", "interrupted"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "interrupted"})
JsonDict = dict[str, "JsonValue"]
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    route TEXT NOT NULL,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    client_id TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT UNIQUE,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    step INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, priority DESC, seq);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id);
"""


@dataclass(frozen=True)
class Job:
    """One row of the queue."""

    id: str
    seq: int
    kind: str
    route: str  # "native" or "a1111": which API queued it
    spec: JsonDict  # {"params": {...}, "images": {...}, ...}: everything needed to run it
    priority: int
    client_id: str
    idempotency_key: str | None
    status: Status
    created: float
    started: float | None = None
    finished: float | None = None
    step: int = 0
    steps: int = 0
    error: str | None = None
    result: JsonDict = field(default_factory=dict)

    def to_json(self, queue_position: int | None = None) -> JsonDict:
        out: JsonDict = {
            "id": self.id, "kind": self.kind, "status": self.status, "priority": self.priority,
            "client_id": self.client_id, "created": self.created, "started": self.started,
            "finished": self.finished, "progress": (self.step / self.steps) if self.steps else
            (1.0 if self.status == "succeeded" else 0.0),
            "step": self.step, "steps": self.steps, "error": self.error,
            "images": self.result.get("images", []), "infotexts": self.result.get("infotexts", []),
            "params": self.spec.get("params", {}),
        }
        if queue_position is not None:
            out["queue_position"] = queue_position
        return out


@dataclass(frozen=True)
class Event:
    id: int
    job_id: str
    type: str
    data: JsonDict


class DuplicateKey(Exception):
    """The idempotency key was already used: carries the job it queued."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], seq=row["seq"], kind=row["kind"], route=row["route"], spec=json.loads(row["spec"]),
               priority=row["priority"], client_id=row["client_id"], idempotency_key=row["idempotency_key"],
               status=row["status"], created=row["created"], started=row["started"], finished=row["finished"],
               step=row["step"], steps=row["steps"], error=row["error"],
               result=json.loads(row["result"]) if row["result"] else {})


class JobStore:
    """The queue database at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        with self._lock:
            self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a 202 means the job is on disk
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _event(self, db: sqlite3.Connection, job_id: str, type_: str, data: Mapping[str, JsonValue]) -> None:
        db.execute("INSERT INTO events (job_id, type, data, time) VALUES (?, ?, ?, ?)",
                   (job_id, type_, json.dumps({"job_id": job_id, **data}), time.time()))

    # --- queueing ---------------------------------------------------------------------------------

    def add(self, kind: str, spec: JsonDict, *, route: str = "native", priority: int = 0, client_id: str = "",
            idempotency_key: str | None = None) -> Job:
        """Queue a job (raises DuplicateKey when the idempotency key queued one before)."""
        job_id = uuid.uuid4().hex
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                if row is not None:
                    raise DuplicateKey(_job(row))
            db.execute("INSERT INTO jobs (id, kind, route, spec, priority, client_id, idempotency_key, status, created)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                       (job_id, kind, route, json.dumps(spec), priority, client_id, idempotency_key, time.time()))
            self._event(db, job_id, "queued", {"kind": kind})
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def queue_position(self, job: Job) -> int | None:
        """0 for the next job to run, None when it is not queued."""
        if job.status != "queued":
            return None
        row = self._db().execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND (priority > ? OR (priority = ? AND seq < ?))",
            (job.priority, job.priority, job.seq)).fetchone()
        return int(row[0])

    def count(self, status: str | None = None, client_id: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM jobs WHERE 1=1", list[object]()
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        if client_id is not None:
            sql, args = sql + " AND client_id = ?", [*args, client_id]
        return int(self._db().execute(sql, args).fetchone()[0])

    def history(self, status: str | None = None, limit: int = 50, before_seq: int | None = None) -> list[Job]:
        """Newest first; ``before_seq`` pages on (the cursor is the last job's seq)."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", list[object]()
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        if before_seq is not None:
            sql, args = sql + " AND seq < ?", [*args, before_seq]
        rows = self._db().execute(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
        return [_job(r) for r in rows]

    def queued(self) -> list[Job]:
        rows = self._db().execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, seq").fetchall()
        return [_job(r) for r in rows]

    # --- the worker's side ------------------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """Mark the next queued job running and return it (None when the queue is empty)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', started = ?, step = 0 WHERE id = ?",
                       (time.time(), row["id"]))
            self._event(db, row["id"], "started", {})
        return self.get(row["id"])

    def progress(self, job_id: str, step: int, steps: int, preview: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET step = ?, steps = ? WHERE id = ?", (step, steps, job_id))
            data: JsonDict = {"step": step, "total": steps}
            if preview is not None:
                data["preview"] = preview
            self._event(db, job_id, "progress", data)

    def finish(self, job_id: str, status: Status, *, error: str | None = None,
               result: JsonDict | None = None) -> None:
        """A terminal state and its event; nothing happens to a job that already ended."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] in TERMINAL:
                return
            db.execute("UPDATE jobs SET status = ?, finished = ?, error = ?, result = ? WHERE id = ?",
                       (status, time.time(), error, json.dumps(result or {}), job_id))
            data: JsonDict = {"error": error} if error else {}
            if result:
                data["images"] = result.get("images", [])
            self._event(db, job_id, status, data)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False if it is not queued."""
        with self._tx() as db:
            changed = db.execute("UPDATE jobs SET status = 'canceled', finished = ? WHERE id = ? AND status = 'queued'",
                                 (time.time(), job_id)).rowcount
            if changed:
                self._event(db, job_id, "canceled", {})
        return bool(changed)

    def retry(self, job_id: str) -> bool:
        """Queue an interrupted, failed or canceled job again (same id); False for other states."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE jobs SET status = 'queued', started = NULL, finished = NULL, error = NULL, result = NULL,"
                " step = 0 WHERE id = ? AND status IN ('interrupted', 'failed', 'canceled')", (job_id,)).rowcount
            if changed:
                self._event(db, job_id, "queued", {"retry": True})
        return bool(changed)

    def delete(self, job_id: str) -> Job | None:
        """Remove a finished job (its events stay for replay); None if absent or not finished."""
        job = self.get(job_id)
        if job is None or job.status not in TERMINAL:
            return None
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._event(db, job_id, "deleted", {})
        return job

    def recover(self) -> list[str]:
        """After a crash or restart: running jobs become ``interrupted``; returns their ids."""
        with self._tx() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'").fetchall()]
            for job_id in ids:
                reason = "the server stopped while this job ran (retry it with POST /api/v1/jobs/{id}/retry)"
                db.execute("UPDATE jobs SET status = 'interrupted', finished = ?, error = ? WHERE id = ?",
                           (time.time(), reason, job_id))
                self._event(db, job_id, "interrupted", {"error": reason})
        return ids

    # --- events -----------------------------------------------------------------------------------

    def last_event_id(self) -> int:
        row = self._db().execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def events_after(self, last_id: int, job_id: str | None = None, limit: int = 500) -> list[Event]:
        sql, args = "SELECT * FROM events WHERE id > ?", list[object]([last_id])
        if job_id is not None:
            sql, args = sql + " AND job_id = ?", [*args, job_id]
        rows = self._db().execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()
        return [Event(r["id"], r["job_id"], r["type"], json.loads(r["data"])) for r in rows]

    def result_names(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` are images some job in the database produced."""
        wanted = set(names)
        found: set[str] = set()
        for row in self._db().execute("SELECT result FROM jobs WHERE result IS NOT NULL").fetchall():
            images = json.loads(row["result"]).get("images", []) if row["result"] else []
            found |= wanted & set(images)
        return found
