"""The server is safe by default: traversal, cross-site writes, DNS rebinding, auth, limits, bad input, crashes."""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from huihua.cli.parser import build_parser
from huihua.cli.serve_cmd import config_from_args
from huihua.errors import ParameterError
from huihua.server.config import Limits
from tests.server_helpers import LiveServer, free_port, live_server

ROOT = Path(__file__).resolve().parents[1]
FAST = {"steps": 2, "sampler_name": "Euler", "cfg_scale": 5.0, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    data = tmp_path_factory.mktemp("safe") / "data"
    limits = Limits(max_body_bytes=2_000_000, max_image_pixels=512 * 512)
    with live_server(data, limits=limits) as live:
        yield live


def png_b64(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# --- names and paths -----------------------------------------------------------------------------

TRAVERSALS = ["../queue.sqlite3", "..%2fqueue.sqlite3", "%2e%2e%2fqueue.sqlite3", "%2e%2e/%2e%2e/etc/passwd",
              "/etc/passwd", "%2fetc%2fpasswd", "....//queue.sqlite3", "..\\queue.sqlite3", "queue.sqlite3",
              "00000000000000000000000000000000-0.png"]


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("route", ["/api/v1/images/{}", "/api/v1/jobs/{}", "/api/v1/jobs/{}/events"])
def test_no_name_reaches_the_filesystem(server: LiveServer, route: str, name: str) -> None:
    with server.client() as c:
        response = c.get(route.format(name))
    assert response.status_code == 404, response.text
    assert b"root:" not in response.content and b"SQLite" not in response.content


def test_a_symlink_out_of_the_data_folder_is_not_served(server: LiveServer, tmp_path: Path) -> None:
    with server.client() as c:
        job = c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": "a cat"}}).json()["id"]
        name = server.wait_status(job, {"succeeded"})["images"][0]
        path = server.config.images_dir / name
        secret = tmp_path / "secret.txt"
        secret.write_text("secret")
        path.unlink()
        path.symlink_to(secret)
        assert c.get(f"/api/v1/images/{name}").status_code == 404


def test_uploads_are_never_stored_under_a_clients_name(server: LiveServer) -> None:
    with server.client() as c:
        for name in ("../../evil.png", "/tmp/evil.png", "0" * 32 + ".png"):
            r = c.post("/api/v1/jobs", json={"kind": "img2img", "params": FAST, "images": {"init_images": [name]}})
            assert r.status_code in (404, 422), r.text
        ok = c.post("/api/v1/uploads", json={"image": png_b64((64, 64)), "name": "../../evil.png"}).json()
        assert ok["name"] != "evil.png" and len(ok["name"]) == 36
    assert not (server.config.data_dir.parent / "evil.png").exists()


# --- cross-site, rebinding, auth --------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Referer": "https://evil.example/page"}])
def test_cross_site_writes_are_refused(server: LiveServer, headers: dict[str, str]) -> None:
    with server.client() as c:
        r = c.post("/api/v1/jobs", json={"params": FAST}, headers=headers)
        assert r.status_code == 403
        assert c.post("/sdapi/v1/interrupt", headers=headers).status_code == 403
        same = c.post("/api/v1/queue/resume", headers={"Origin": server.url})
        assert same.status_code == 200  # the server's own page may write


def test_a_foreign_host_header_is_refused(server: LiveServer) -> None:
    with server.client() as c:
        assert c.get("/api/v1/health", headers={"Host": "evil.example"}).status_code == 403
        assert c.get("/api/v1/health", headers={"Host": f"localhost:{server.config.port}"}).status_code == 200


def test_an_empty_authorization_header_is_fine_on_loopback_without_auth(server: LiveServer) -> None:
    with server.client() as c:
        assert c.get("/api/v1/health", headers={"Authorization": ""}).status_code == 200


def _serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_an_open_bind_needs_authentication(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUIHUA_API_AUTH", raising=False)
    monkeypatch.delenv("HUIHUA_TOKEN", raising=False)
    with pytest.raises(ParameterError, match="--api-auth USER:PASS"):
        config_from_args(_serve_args("--host", "0.0.0.0"))
    assert config_from_args(_serve_args("--host", "0.0.0.0", "--api-auth", "me:pw")).basic_auth == ("me", "pw")
    assert config_from_args(_serve_args("--host", "0.0.0.0", "--insecure-no-auth")).insecure_no_auth
    secret = tmp_path / "token"
    secret.write_text("t0ken\n")
    assert config_from_args(_serve_args("--host", "0.0.0.0", "--token", f"@{secret}")).token == "t0ken"
    monkeypatch.setenv("HUIHUA_TOKEN", "from-env")
    assert config_from_args(_serve_args("--host", "0.0.0.0")).token == "from-env"


def test_credentials_are_checked_and_never_echoed(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", basic_auth=("me", "s3cret-pw"), token="tok-123") as live, \
            live.client() as c:
            assert c.get("/api/v1/health").status_code == 401
            assert c.get("/api/v1/health", auth=("me", "wrong")).status_code == 401
            assert c.get("/api/v1/health", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert c.get("/api/v1/health", auth=("me", "s3cret-pw")).status_code == 200
            assert c.get("/api/v1/health", headers={"Authorization": "Bearer tok-123"}).status_code == 200
            for route in ("/sdapi/v1/cmd-flags", "/sdapi/v1/options", "/api/v1/health", "/openapi.json"):
                body = c.get(route, auth=("me", "s3cret-pw")).text
                assert "s3cret-pw" not in body and "tok-123" not in body


# --- limits and bad input --------------------------------------------------------------------------


def test_oversized_bodies_and_pictures_are_413(server: LiveServer) -> None:
    with server.client() as c:
        r = c.post("/api/v1/uploads", content=b"{" + b" " * 3_000_000 + b"}",
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        big = c.post("/api/v1/uploads", json={"image": png_b64((1024, 1024))})
        assert big.status_code == 413 and "pixels" in big.json()["detail"]
        work = c.post("/api/v1/jobs", json={"params": {**FAST, "steps": 150, "batch_size": 8, "n_iter": 10}})
        assert work.status_code == 413 and "batch_size × n_iter × steps" in work.json()["detail"]
        prompt = c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": "x" * 30_000}})
        assert prompt.status_code == 413


def test_a_decompression_bomb_is_refused(server: LiveServer) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")  # tiny file, 400 M pixels
    r = httpx.post(f"{server.url}/api/v1/uploads", json={"image": base64.b64encode(buffer.getvalue()).decode()},
                   timeout=60)
    assert r.status_code == 413


@pytest.mark.parametrize(("body", "where"), [
    (b"{not json", "body"), (b'{"image": "!!!notbase64"}', "image"), (b'{"image": "aGVsbG8="}', "image"),
    (b"[]", "image"),
])
def test_malformed_json_and_base64_are_422(server: LiveServer, body: bytes, where: str) -> None:
    r = httpx.post(f"{server.url}/api/v1/uploads", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and where in r.json()["detail"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                         | st.floats(allow_nan=False, allow_infinity=False),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                             st.sampled_from(["kind", "params", "images", "priority", "steps", "prompt", "width",
                                              "init_images", "mask", "seed", "idempotency_key", "client_id"]),
                             inner, max_size=5), max_leaves=12))
def test_no_body_makes_a_5xx(server: LiveServer, body: object) -> None:
    with server.client() as c:
        c.post("/api/v1/queue/pause")  # nothing runs: only validation is exercised
        for route in ("/api/v1/jobs", "/api/v1/jobs/batch", "/sdapi/v1/png-info", "/api/v1/uploads"):
            r = c.post(route, json=body)
            assert r.status_code < 500, (route, body, r.text)


# --- durability ----------------------------------------------------------------------------------


def _start(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "huihua", "serve", "--data", str(data), "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_up(url: str) -> None:
    end = time.time() + 60
    while time.time() < end:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the server did not come up")


def test_kill_9_mid_job_loses_nothing(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(data, port)
    try:
        _wait_up(url)
        steps = [4, 1000, 4, 4, 4]
        bodies = [{"params": {**FAST, "steps": s, "prompt": f"job {i}"}} for i, s in enumerate(steps)]
        ids = [httpx.post(f"{url}/api/v1/jobs", json=body).json()["id"] for body in bodies]
        end = time.time() + 60
        while httpx.get(f"{url}/api/v1/jobs/{ids[1]}").json()["step"] < 3 and time.time() < end:
            time.sleep(0.05)
        first = httpx.get(f"{url}/api/v1/jobs/{ids[0]}").json()
        assert first["status"] == "succeeded"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = _start(data, port)
    try:
        _wait_up(url)
        second = httpx.get(f"{url}/api/v1/jobs/{ids[1]}").json()
        assert second["status"] == "interrupted" and "stopped" in second["error"]
        for job_id in ids[2:]:
            end = time.time() + 60
            while httpx.get(f"{url}/api/v1/jobs/{job_id}").json()["status"] != "succeeded" and time.time() < end:
                time.sleep(0.05)
            assert httpx.get(f"{url}/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
        image = httpx.get(f"{url}/api/v1/images/{first['images'][0]}")
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")  # the finished job kept its file
        assert not list(data.glob("**/.*.tmp"))  # no half-written file left behind
        retried = httpx.post(f"{url}/api/v1/jobs/{ids[1]}/retry").json()
        assert retried["status"] in ("queued", "running")
    finally:
        proc.kill()
        proc.wait(10)
