"""The web page in a real headless Chromium (Debian's package, driven by Playwright) on the embedded model.

Every test fails on a console error or on any request to a host other than the server.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from tests.server_helpers import LiveServer, live_server

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("web") / "data") as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture()
def page(browser, server: LiveServer) -> Iterator[object]:
    # Playwright's wait_for_function evaluates strings, which the page's CSP forbids: bypass it in tests
    # (test_the_page_forbids_foreign_content checks the header itself).
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    problems: list[str] = []
    expected = "the server responded with a status of 422"  # a refused field: the page shows it, Chrome logs it

    def console(m) -> None:
        if m.type == "error" and expected not in m.text:
            problems.append(f"console {m.type}: {m.text}")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    host = urlsplit(server.url).netloc
    page.on("request", lambda r: problems.append(f"request to {r.url}")
            if urlsplit(r.url).scheme in ("http", "https") and urlsplit(r.url).netloc != host else None)
    page.goto(server.url)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert problems == []


def tid(page, name: str):
    return page.locator(f"[data-testid={name}]")


def fill_basics(page, prompt: str, seed: int, steps: int = 6) -> None:
    tid(page, "prompt").fill(prompt)
    tid(page, "seed").fill(str(seed))
    tid(page, "steps").fill(str(steps))


def gallery_count(page) -> int:
    return tid(page, "gallery-item").count()


def wait_gallery(page, count: int, timeout: float = 60) -> None:
    end = time.time() + timeout
    while gallery_count(page) < count and time.time() < end:
        page.wait_for_timeout(50)
    assert gallery_count(page) >= count


def image_of(page, locator) -> np.ndarray:
    src = locator.get_attribute("src")
    data = page.request.get(src if src.startswith("http") else page.url.rstrip("/") + src).body()
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_generate_shows_the_picture_with_its_infotext_and_reuse_repaints_it(page) -> None:
    before = gallery_count(page)
    fill_basics(page, "a red circle", 21)
    tid(page, "generate").click()
    wait_gallery(page, before + 1)
    first = tid(page, "gallery-item").first
    first.click()
    page.wait_for_function("document.querySelector('[data-testid=infotext]').textContent.includes('Seed: 21')")
    assert tid(page, "infotext").text_content().startswith("a red circle\nSteps: 6")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-generate.png"))
    original = image_of(page, first)
    tid(page, "prompt").fill("something else")
    tid(page, "seed").fill("-1")
    tid(page, "reuse-parameters").click()
    assert tid(page, "prompt").input_value() == "a red circle" and tid(page, "seed").input_value() == "21"
    tid(page, "generate").click()
    wait_gallery(page, before + 2)
    assert np.array_equal(image_of(page, tid(page, "gallery-item").first), original)


def test_progress_moves_and_a_preview_appears(page) -> None:
    fill_basics(page, "a slow blue star", 3, steps=300)
    tid(page, "generate").click()
    page.wait_for_function("Number(document.querySelector('[data-testid=progress]').getAttribute('aria-valuenow')) > 5")
    page.wait_for_function("!document.querySelector('[data-testid=preview]').hidden")
    assert tid(page, "preview").get_attribute("src").startswith("data:image/jpeg;base64,")
    tid(page, "cancel").first.click()
    page.wait_for_function("document.querySelectorAll('[data-testid=queue-item]').length === 0")


def test_queue_three_and_cancel_the_second(page, server: LiveServer) -> None:
    with server.client() as c:
        c.post("/api/v1/queue/pause")
    before = gallery_count(page)
    for i in range(3):
        fill_basics(page, f"job {i}", 100 + i, steps=4)
        tid(page, "generate").click()
        page.wait_for_function(f"document.querySelectorAll('[data-testid=queue-item]').length === {i + 1}")
    second = tid(page, "queue-item").nth(1)
    job_id = second.get_attribute("data-job")
    second.locator("[data-testid=cancel]").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=queue-item]').length === 2")
    with server.client() as c:
        c.post("/api/v1/queue/resume")
    wait_gallery(page, before + 2)
    page.wait_for_timeout(500)
    assert gallery_count(page) == before + 2
    assert server.wait_status(job_id, {"canceled"})["status"] == "canceled"


def test_img2img_and_inpainting_with_a_painted_mask(page, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (30, 160, 30)).save(init)
    tid(page, "init-image-input").set_input_files(str(init))
    page.wait_for_selector("#canvas-wrap:not([hidden])")
    before = gallery_count(page)
    fill_basics(page, "a yellow square", 8)
    tid(page, "denoising-strength").fill("0.6")
    tid(page, "generate").click()
    wait_gallery(page, before + 1)
    box = tid(page, "mask-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    for k in range(10):
        page.mouse.move(box["x"] + box["width"] * (0.3 + k * 0.04), box["y"] + box["height"] * 0.5)
    page.mouse.up()
    tid(page, "generate").click()
    wait_gallery(page, before + 2)
    tid(page, "gallery-item").first.click()
    page.wait_for_function("document.querySelector('[data-testid=infotext]').textContent.includes('Mask blur')")
    page.screenshot(path=str(ARTIFACTS / "web-inpaint.png"))


def test_png_info_reads_a_dropped_picture(page, tmp_path: Path) -> None:
    path = tmp_path / "a1111.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a castle on a hill\nSteps: 12, Sampler: Euler, CFG scale: 6, Seed: 5, Size: 64x64")
    Image.new("RGB", (64, 64)).save(path, pnginfo=meta)
    page.click("[data-tab=pnginfo]")
    tid(page, "png-info-input").set_input_files(str(path))
    page.wait_for_function("document.querySelector('[data-testid=png-info-text]').textContent.includes('castle')")
    page.click("#png-to-generate")
    assert tid(page, "prompt").input_value() == "a castle on a hill" and tid(page, "steps").input_value() == "12"


def test_lora_picker_and_history_after_reload(page, server: LiveServer) -> None:
    tid(page, "prompt").fill("a circle")
    page.click("#networks summary")
    tid(page, "lora-item").filter(has_text="huihua-red").click()
    assert tid(page, "prompt").input_value() == "a circle <lora:huihua-red:1>"
    count = gallery_count(page)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert tid(page, "prompt").input_value() == "a circle <lora:huihua-red:1>"  # settings persist
    assert gallery_count(page) == count  # the history is the server's


def test_a_field_error_is_shown_next_to_the_field(page) -> None:
    tid(page, "steps").fill("0")
    tid(page, "generate").click()
    page.wait_for_function("document.querySelector('[data-testid=error]').textContent.includes('steps')")


def test_jobs_queued_elsewhere_arrive_in_the_gallery(page, server: LiveServer) -> None:
    before = gallery_count(page)
    server.state.worker.paused.clear()
    with server.client() as c:  # a job queued by someone else still arrives in the gallery
        c.post("/api/v1/jobs", json={"params": {"prompt": "from elsewhere", "steps": 3, "sampler_name": "Euler"}})
    wait_gallery(page, before + 1)


def test_the_page_forbids_foreign_content(server: LiveServer) -> None:
    with server.client() as c:
        response = c.get("/")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "http" not in response.text.replace(server.url, "")  # no CDN, no external font or script
