"""Bounded load test of ``huihua serve`` on loopback: concurrent clients poll progress, list jobs, enqueue.

Starts a server on the embedded model in a subprocess, runs ``--clients`` asyncio clients for
``--seconds``, then waits for every enqueued job and prints: requests, 5xx count, jobs enqueued vs.
finished (lost = neither), and the median / p95 latency of ``/sdapi/v1/progress`` while jobs ran.

    python bench/server_load.py --seconds 60 --clients 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
JOBS_PER_CLIENT = 4  # 20 clients: 80 small jobs, about a minute of painting on 2 CPU cores
JOB = {"params": {"prompt": "a red circle", "steps": 8, "sampler_name": "Euler", "cfg_scale": 5.0}}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(url: str, until: float, stats: dict[str, list[float] | int], jobs: list[str], seed: int) -> None:
    rng = random.Random(seed)
    mine = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        while time.time() < until:
            action = rng.random()
            start = time.perf_counter()
            if action < 0.6:
                r = await c.get("/sdapi/v1/progress")
                if r.status_code == 200 and r.json()["state"]["job"]:
                    stats["progress_busy"].append(time.perf_counter() - start)  # type: ignore[union-attr]
            elif action < 0.85:
                r = await c.get("/api/v1/jobs", params={"limit": 20})
            elif mine < JOBS_PER_CLIENT:
                r = await c.post("/api/v1/jobs", json={**JOB, "client_id": f"c{seed}"})
                if r.status_code == 202:
                    jobs.append(r.json()["id"])
                    mine += 1
            else:
                r = await c.get("/api/v1/queue")
            stats["requests"] += 1  # type: ignore[operator]
            if r.status_code >= 500:
                stats["errors"] += 1  # type: ignore[operator]
            await asyncio.sleep(rng.uniform(0.01, 0.05))


async def run(url: str, seconds: float, clients: int) -> dict[str, object]:
    stats: dict[str, list[float] | int] = {"requests": 0, "errors": 0, "progress_busy": []}
    jobs: list[str] = []
    until = time.time() + seconds
    await asyncio.gather(*(client(url, until, stats, jobs, i) for i in range(clients)))
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        deadline = time.time() + 600
        pending = set(jobs)
        while pending and time.time() < deadline:
            for job_id in list(pending):
                status = (await c.get(f"/api/v1/jobs/{job_id}")).json()["status"]
                if status in ("succeeded", "failed", "canceled", "interrupted"):
                    pending.discard(job_id)
            await asyncio.sleep(0.5)
        failed = [j for j in jobs if (await c.get(f"/api/v1/jobs/{j}")).json()["status"] != "succeeded"]
    busy = sorted(stats["progress_busy"])  # type: ignore[arg-type]
    return {"requests": stats["requests"], "5xx": stats["errors"], "enqueued": len(jobs),
            "not_succeeded": len(failed), "lost": len(pending),
            "progress_median_ms": round(statistics.median(busy) * 1000, 1) if busy else None,
            "progress_p95_ms": round(busy[int(len(busy) * 0.95)] * 1000, 1) if busy else None,
            "progress_samples_while_busy": len(busy)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "huihua", "serve", "--data", data, "--port", str(port),
                                 "--device", "cpu"], env=env)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            result = asyncio.run(run(url, args.seconds, args.clients))
        finally:
            proc.terminate()
            proc.wait(30)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0 if result["5xx"] == 0 and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
