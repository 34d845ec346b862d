"""A live huihua server on loopback for the server tests: uvicorn in a thread (or a subprocess)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import uvicorn

from huihua.server.app import build_state, create_app
from huihua.server.config import ServerConfig
from huihua.server.state import ServerState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, config: ServerConfig, state: ServerState) -> None:
        self.config = config
        self.state = state
        self.url = f"http://127.0.0.1:{config.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)  # type: ignore[arg-type]

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 120) -> dict:
        end = time.time() + timeout
        with self.client() as c:
            while time.time() < end:
                job = c.get(f"/api/v1/jobs/{job_id}").json()
                if job["status"] in statuses:
                    return job
                time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached {statuses}")


@contextmanager
def live_server(data: Path, **overrides: object) -> Iterator[LiveServer]:
    config = replace(ServerConfig(data_dir=data, port=free_port(), device="cpu"), **overrides)  # type: ignore[arg-type]
    state = build_state(config)
    server = uvicorn.Server(uvicorn.Config(create_app(config, state), host=config.host, port=config.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.time() + 30
    while not server.started:
        if time.time() > end or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(config, state)
    finally:
        server.should_exit = True
        thread.join(30)
