"""The web page in a real browser: Debian's headless Chromium driven by Playwright (never a
browser Playwright downloads). Opens the page served on a free 127.0.0.1 port, chooses a
photo from ../shared/data/photos, picks a style, stylizes, checks the result's size and the
download link, shows an error for a file that is not an image, and saves screenshots
(laptop and phone widths) for a person to look at.

Skips only when no Chromium is installed (`.ci/run` installs Debian's `chromium`).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from PIL import Image, ImageOps
from stylize_helpers import save_multi_style_test_model
from test_serve import save_served_models

from fnst_jax.serve.app import create_app
from fnst_jax.serve.models import load_models
from fnst_jax.serve.service import Service, Settings
from fnst_jax.stylize.inputs import Options, target_size

pytestmark = [pytest.mark.usefixtures("fast_compile"), pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHOTO = "bsd_101085.jpg"
RESULT_LOADED = "#result[data-loaded=true]"  # a selector: the page's CSP forbids eval
# Where screenshots are copied for people to look at (they are always in tmp_path too).
SCREENSHOT_DIR_ENV = "FNST_SERVE_SCREENSHOTS"


def chromium_path() -> str:
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no Chromium installed: apt-get install chromium (.ci/run does)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def base_url(tmp_path):
    """The service on a free loopback port, in a thread; stopped after the test."""
    folder = save_served_models(tmp_path / "models")
    save_multi_style_test_model(folder / "duo.npz")  # served as duo-dots and duo-waves
    models = load_models([folder], max_batch=2)
    service = Service(models, Settings(warm_sizes=(), max_batch=2, max_wait_ms=5))
    port = free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and service.ready):
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(60)


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get(SCREENSHOT_DIR_ENV):
        target = Path(os.environ[SCREENSHOT_DIR_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def stylize_in_page(page, photo: Path, model: str) -> None:
    page.set_input_files("#file", str(photo))
    page.click(f".style-card[data-model={model}]")
    page.select_option("#size", "256")
    page.click("#stylize")
    page.wait_for_selector(RESULT_LOADED, timeout=120_000)


def test_page_stylizes_a_photo_in_chromium(base_url, shared_data, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    executable = chromium_path()
    photo = shared_data / "photos" / PHOTO
    with Image.open(photo) as image:
        width, height = ImageOps.exif_transpose(image).size
    expected = target_size(width, height, Options(size=256))
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a photo")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page_errors = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(base_url)
            page.wait_for_selector(".style-card >> nth=1")
            assert page.locator(".style-card").count() == 4
            thumbnail_width = page.eval_on_selector(
                ".style-card[data-model=mosaic] img", "img => img.complete && img.naturalWidth"
            )
            assert thumbnail_width and thumbnail_width <= 128  # the style thumbnail shows
            assert page.locator(".style-card[data-model=candy] img").count() == 0  # name only

            stylize_in_page(page, photo, "mosaic")
            size = page.eval_on_selector("#result", "img => [img.naturalWidth, img.naturalHeight]")
            assert tuple(size) == expected
            assert page.get_attribute(".style-card[data-model=mosaic]", "aria-checked") == "true"
            download = page.locator("#download")
            assert download.is_visible()
            assert download.get_attribute("href").startswith("blob:")
            assert download.get_attribute("download") == "bsd_101085_mosaic.jpg"
            assert "batch of 1" in page.inner_text("#timing")
            assert page.is_hidden("#message")
            laptop = save_screenshot(page, tmp_path, "serve_page.png")
            assert page.is_hidden("#blend-field")  # one style: nothing to blend

            # A style of a multi-style model blends with the model's other styles (?mix=).
            page.click(".style-card[data-model=duo-dots]")
            assert page.is_visible("#blend-field")
            options = page.eval_on_selector_all("#blend-with option", "os => os.map(o => o.value)")
            assert options == ["waves"]
            page.eval_on_selector(
                "#blend-amount",
                "e => { e.value = '30'; e.dispatchEvent(new Event('input')); }",
            )
            assert page.inner_text("#blend-value") == "30%"
            with page.expect_request("**/v1/stylize?*") as request:
                page.click("#stylize")
            assert "mix=dots%3A70%2Cwaves%3A30" in request.value.url
            page.wait_for_selector(RESULT_LOADED, timeout=120_000)
            assert page.is_hidden("#message")
            assert page.get_attribute("#download", "download") == "bsd_101085_duo-dots.jpg"
            save_screenshot(page, tmp_path, "serve_page_blend.png")

            page.set_input_files("#file", str(not_an_image))
            page.click("#stylize")
            page.wait_for_selector("#message:not([hidden])", timeout=60_000)
            assert "Not an image" in page.inner_text("#message")
            assert page.inner_text("#original-empty") == "No preview for this file"
            assert page.is_hidden("#result")

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.on("pageerror", lambda error: page_errors.append(str(error)))
            phone.goto(base_url)
            phone.wait_for_selector(".style-card >> nth=1")
            stylize_in_page(phone, photo, "candy")
            # One column: nothing wider than the screen, the result below the controls.
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            form_bottom = phone.eval_on_selector("#form", "e => e.getBoundingClientRect().bottom")
            results_top = phone.eval_on_selector(".results", "e => e.getBoundingClientRect().top")
            assert results_top >= form_bottom
            save_screenshot(phone, tmp_path, "serve_page_phone.png")
            assert page_errors == []
        finally:
            browser.close()
    assert laptop.stat().st_size > 10_000
