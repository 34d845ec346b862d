"""The server end to end on loopback: the real webuiapi client, the native job API, SSE, cancel, priority.

One server (embedded model, CPU) serves the module; jobs are 64×64 and a few steps, so each takes well
under a second, and "slow" jobs (to watch progress or cancel mid-run) use many steps.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image, PngImagePlugin

from huihua.cli.main import main
from huihua.imagefile import read_infotext
from tests.server_helpers import LiveServer, live_server
from tests.tiny_checkpoints import tiny_reference, write_single_file

FAST = {"steps": 4, "sampler_name": "Euler", "cfg_scale": 5.0, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    root = tmp_path_factory.mktemp("server")
    models = root / "models"
    models.mkdir()
    write_single_file(tiny_reference("sd1"), models / "tiny-sd1.safetensors")
    with live_server(root / "data", models_dirs=(models,)) as live:
        yield live


@pytest.fixture()
def sd(server: LiveServer) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.config.port, sampler="Euler", steps=4)


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


# --- the A1111 routes through webuiapi ----------------------------------------------------------


def test_txt2img_matches_the_cli_pixel_for_pixel(sd: webuiapi.WebUIApi, tmp_path: Path) -> None:
    result = sd.txt2img(prompt="a red circle", seed=11, cfg_scale=5, width=64, height=64, steps=6, eta=1.0)
    info = result.info
    assert info["seed"] == 11 and info["all_seeds"] == [11] and info["width"] == 64
    assert info["sampler_name"] == "Euler" and info["sd_model_name"] == "huihua-default"
    for key in ("prompt", "all_prompts", "negative_prompt", "subseed", "steps", "batch_size", "sd_model_hash",
                "extra_generation_params", "index_of_first_image", "infotexts", "job_timestamp", "clip_skip",
                "version", "styles", "denoising_strength"):
        assert key in info, key
    out = tmp_path / "cli.png"
    assert main(["generate", "a red circle", "--seed", "11", "--cfg-scale", "5", "--steps", "6", "--sampler", "Euler",
                 "--eta", "1", "-W", "64", "-H", "64", "-q", "--device", "cpu", "-o", str(out)]) == 0
    with Image.open(out) as cli:
        assert np.array_equal(pixels(result.image), pixels(cli))
    assert info["infotexts"][0] == read_infotext(out)


def test_img2img_with_a_mask_and_a_controlnet_unit(sd: webuiapi.WebUIApi) -> None:
    init = Image.new("RGB", (64, 64), (40, 40, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = sd.img2img(images=[init], mask_image=mask, prompt="a yellow star", seed=3, cfg_scale=5,
                        denoising_strength=0.8, width=64, height=64, inpainting_fill=1)
    out = pixels(result.image)
    assert out.shape == (64, 64, 3)
    assert np.abs(out[:8, :8] - np.array([40, 40, 200])).max() <= 12  # outside the mask: the picture kept
    assert "Denoising strength: 0.8" in result.info["infotexts"][0]
    hint = Image.new("RGB", (64, 64), (0, 0, 0))
    hint.paste((255, 255, 255), (20, 20, 44, 44))
    unit = webuiapi.ControlNetUnit(image=hint, module="none", model="huihua-silhouette", weight=1.0)
    cn = sd.txt2img(prompt="a red square", seed=4, cfg_scale=5, width=64, height=64, controlnet_units=[unit])
    assert "ControlNet 0" in cn.info["infotexts"][0] and "huihua-silhouette" in cn.info["infotexts"][0]


def test_lists_and_model_switch(sd: webuiapi.WebUIApi, server: LiveServer) -> None:
    models = sd.get_sd_models()
    titles = [m["title"] for m in models]
    assert titles[0].startswith("huihua-default [") and any(t.startswith("tiny-sd1 [") for t in titles)
    assert {"title", "model_name", "hash", "sha256", "filename", "config"} <= set(models[0])
    assert "Euler" in [s["name"] for s in sd.get_samplers()]
    assert "karras" in [s["name"] for s in sd.get_schedulers()]
    assert [u["name"] for u in sd.get_upscalers()][:2] == ["None", "Lanczos"]
    assert [lo["name"] for lo in sd.get_loras()] == ["huihua-red"]
    assert sd.get_embeddings()["loaded"] == {}
    tiny = next(t for t in titles if t.startswith("tiny-sd1"))
    sd.util_set_model(tiny)
    assert sd.get_options()["sd_model_checkpoint"] == tiny
    with server.client() as c:
        bad = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope [deadbeef]"})
        assert bad.status_code == 404 and "nope" in bad.json()["detail"]
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == tiny  # still loaded
        whole = c.get("/sdapi/v1/options").json()
        whole["sd_model_checkpoint"] = titles[0]
        assert c.post("/sdapi/v1/options", json=whole).status_code == 200  # the whole dict a client got back
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles[0]
        assert c.get("/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
        assert c.get("/controlnet/model_list").json() == {"model_list": ["huihua-silhouette"]}


def test_progress_answers_during_a_generation_and_interrupt_stops_it(sd: webuiapi.WebUIApi,
                                                                     server: LiveServer) -> None:
    seen: list[tuple[int, bool, float]] = []
    done = threading.Event()
    results: list[object] = []

    def paint() -> None:
        results.append(sd.txt2img(prompt="a blue cross", seed=5, cfg_scale=5, width=64, height=64, steps=400))
        done.set()

    thread = threading.Thread(target=paint)
    thread.start()
    with server.client() as c:
        end = time.time() + 60
        while not done.is_set() and time.time() < end:
            start = time.perf_counter()
            p = c.get("/sdapi/v1/progress").json()
            seen.append((p["state"]["sampling_step"], p["current_image"] is not None, time.perf_counter() - start))
            if p["state"]["sampling_step"] >= 40 and p["current_image"]:
                assert c.post("/sdapi/v1/interrupt").status_code == 200
                break
            time.sleep(0.02)
    thread.join(60)
    steps = [s for s, _, _ in seen]
    assert max(steps) >= 40 and any(has for _, has, _ in seen)
    assert steps == sorted(steps)  # rising
    assert float(np.median([t for _, _, t in seen])) < 0.1
    interrupted = results[0]
    assert interrupted.images == [] and interrupted.info.get("interrupted") is True  # type: ignore[attr-defined]
    with server.client() as c:
        assert c.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_png_info_and_extra_single_image(sd: webuiapi.WebUIApi) -> None:
    result = sd.txt2img(prompt="a green star", seed=9, cfg_scale=5, width=64, height=64)
    buffer = io.BytesIO()
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", result.info["infotexts"][0])
    result.image.save(buffer, format="PNG", pnginfo=meta)
    info = sd.png_info(Image.open(io.BytesIO(buffer.getvalue())))
    assert info.info.startswith("a green star\nSteps: 4, Sampler: Euler")
    up = sd.extra_single_image(image=result.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert up.image.size == (128, 128)


# --- the native job API --------------------------------------------------------------------------


def test_enqueue_validates_first_and_idempotency_never_queues_twice(server: LiveServer) -> None:
    with server.client() as c:
        bad = c.post("/api/v1/jobs", json={"kind": "txt2img", "params": {"steps": 0}})
        assert bad.status_code == 422 and "steps" in bad.json()["detail"]
        assert c.post("/api/v1/jobs", json={"kind": "paint"}).status_code == 422
        body = {"kind": "txt2img", "params": {**FAST, "prompt": "a cat", "seed": 1}, "idempotency_key": "k-1"}
        first = c.post("/api/v1/jobs", json=body)
        assert first.status_code == 202 and first.json()["status"] == "queued"
        again = c.post("/api/v1/jobs", json=body)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        job = server.wait_status(first.json()["id"], {"succeeded"})
        assert job["images"] == [f"{job['id']}-0.png"] and job["infotexts"][0].startswith("a cat\n")
        image = c.get(f"/api/v1/images/{job['images'][0]}")
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        listed = c.get("/api/v1/jobs", params={"status": "succeeded", "limit": 1}).json()
        assert len(listed["jobs"]) == 1 and listed["next_cursor"] is not None


def test_sse_progress_with_reconnect_replay(server: LiveServer) -> None:
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json={"params": {**FAST, "steps": 12, "prompt": "a dog"}}).json()["id"]
        events: list[tuple[int, str, dict]] = []
        with c.stream("GET", f"/api/v1/jobs/{job_id}/events") as stream:
            current: dict[str, str] = {}
            for line in stream.iter_lines():
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(":")
                    current[key] = value.strip()
                elif not line and "data" in current:
                    events.append((int(current["id"]), current["event"], json.loads(current["data"])))
                    current = {}
        kinds = [e[1] for e in events]
        assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "succeeded"
        steps = [e[2]["step"] for e in events if e[1] == "progress"]
        assert steps[-1] == 12 and steps == sorted(steps)
        assert any("preview" in e[2] for e in events if e[1] == "progress")
        ids = [e[0] for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        # Reconnect after the third event: exactly the rest comes again.
        replay = c.get(f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(ids[2])})
        replayed = [int(line[3:]) for line in replay.text.splitlines() if line.startswith("id:")]
        assert replayed == ids[3:]


def test_cancel_a_queued_and_a_running_job_leaves_the_others(server: LiveServer) -> None:
    with server.client() as c:
        c.post("/api/v1/queue/pause")
        slow = c.post("/api/v1/jobs", json={"params": {**FAST, "steps": 600, "prompt": "slow"}}).json()["id"]
        queued = c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": "queued"}}).json()["id"]
        other = c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": "other"}}).json()["id"]
        assert c.post(f"/api/v1/jobs/{queued}/cancel").json()["status"] == "canceled"
        c.post("/api/v1/queue/resume")
        end = time.time() + 60
        while c.get(f"/api/v1/jobs/{slow}").json()["step"] < 5 and time.time() < end:
            time.sleep(0.02)
        assert c.post(f"/api/v1/jobs/{slow}/cancel").json()["status"] == "canceling"
        stopped = server.wait_status(slow, {"canceled"})
        assert stopped["step"] < 600
        assert server.wait_status(other, {"succeeded"})["images"]
        assert c.get(f"/api/v1/jobs/{queued}").json()["status"] == "canceled"


def test_priority_then_arrival_order(server: LiveServer) -> None:
    with server.client() as c:
        c.post("/api/v1/queue/pause")
        ids = [c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": f"p{i}"}, "priority": prio}).json()["id"]
               for i, prio in enumerate([0, 5, 0, 5])]
        assert c.get("/api/v1/queue").json()["queued"] == [ids[1], ids[3], ids[0], ids[2]]
        c.post("/api/v1/queue/resume")
        jobs = [server.wait_status(i, {"succeeded"}) for i in ids]
        started = [j["started"] for j in jobs]
        assert started[1] < started[3] < started[0] < started[2]


def test_upload_and_img2img_job(server: LiveServer) -> None:
    with server.client() as c:
        name = c.post("/api/v1/uploads", json={"image": b64(Image.new("RGB", (64, 64), (200, 0, 0)))}).json()["name"]
        job = c.post("/api/v1/jobs", json={"kind": "img2img", "params": {**FAST, "prompt": "x",
                                                                          "denoising_strength": 0.5},
                                           "images": {"init_images": [name]}}).json()
        assert server.wait_status(job["id"], {"succeeded"})["images"]
        missing = c.post("/api/v1/jobs", json={"kind": "inpaint", "params": FAST, "images": {"init_images": [name]}})
        assert missing.status_code == 422 and "mask" in missing.json()["detail"]


def test_a_failing_job_does_not_stop_the_worker(server: LiveServer) -> None:
    with server.client() as c:
        bad = c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": "a <lora:missing:1>"}}).json()["id"]
        good = c.post("/api/v1/jobs", json={"params": {**FAST, "prompt": "fine"}}).json()["id"]
        failed = server.wait_status(bad, {"failed"})
        assert "missing" in failed["error"]
        assert server.wait_status(good, {"succeeded"})["images"]
        assert c.post(f"/api/v1/jobs/{bad}/retry").json()["status"] == "queued"
        server.wait_status(bad, {"failed"})
        assert c.delete(f"/api/v1/jobs/{good}").json()["deleted"] is True
        assert c.get(f"/api/v1/jobs/{good}").status_code == 404
        assert c.get(f"/api/v1/images/{good}-0.png").status_code == 404


def test_health_and_models(server: LiveServer) -> None:
    with server.client() as c:
        assert c.get("/api/v1/health").json()["status"] == "ok"
        models = c.get("/api/v1/models").json()
        assert [m["name"] for m in models["checkpoints"]] == ["huihua-default", "tiny-sd1"]
        assert models["loras"][0]["name"] == "huihua-red" and models["loras"][0]["bundled"] is True
        assert [m["name"] for m in models["controlnets"]] == ["huihua-silhouette"]


def test_openapi_schema_is_served(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as c:
        schema = c.get("/openapi.json").json()
    assert "/sdapi/v1/txt2img" in schema["paths"] and "/api/v1/jobs" in schema["paths"]
