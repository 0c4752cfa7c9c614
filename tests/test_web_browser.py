"""Stylizing on the visitor's device, in a real browser: Debian's headless Chromium driven by
Playwright (never a browser Playwright downloads), onnxruntime-web on WebAssembly.

  * The static site `python -m fnst_jax.export --format web` writes (float16, the default),
    served from its temporary folder by a stdlib http.server on a free 127.0.0.1 port
    (stopped by the test; every request is counted and has a socket timeout): photos of
    two odd sizes (one with colours preserved) and one stylized in tiles, a multi-style
    model's site with a mix, a file that is not an image (a message, and the page still
    works), the model downloaded once, and the webcam's live preview (Chromium's fake
    camera) showing its frame rate. Chromium's software WebGPU adapter is on: the page tries
    it first, and the float16 file falls back to WebAssembly (no shader-f16), saying why.
  * WebGPU itself, on that software adapter, with a float32 site.
  * The service's page with "On this device" (?run=device): a photo stylized in the
    browser from the service's ONNX file, and a TIFF (which browsers cannot decode) sent
    to the server instead, with the reason shown.

Reference: `stylize.py`'s engine through the package API (`loading.load_stylizer`, the JAX
engine, float32) on the same model and pixels (PNG photos: lossless, and decoded alike by
Pillow and the browser), given the photo's brightness as stylize.py and the page do by
default (`fnst_jax.brightness`; the page's own tone curve). Bound: 2/255 on every value.
The float16 file is within 1/255 of the JAX model after rounding (the exporter's check,
`verify`); WebAssembly's onnxruntime rounds float16 differently from Python's by at most
another level (measured: 1/255 at most, on about 5% of the values, both untiled and tiled).

A model with a native size at stroke size "auto" (the network at 32x24 for a 64x48 photo)
is compared with `stylize.py`'s file by the mean difference: both the working image
(Chromium's "high" resize, Pillow's Lanczos) and the upsampler (canvas drawImage at
imageSmoothingQuality "high", Pillow's bicubic) differ by design. One pass
(`--nodetail-pass`, the page's box unchecked): bound 6/255, measured with Debian's Chromium
3.6/255 (3.5 without the brightness curve; max 19, 99th percentile 11). Of that, the
upsampler alone is 0.8/255 (max 4: Chromium enlarging stylize.py's own 32x24 result); the
rest is the working image (2.3/255 apart on the input), which the random test network
amplifies. With the detail pass (the default: the network again at 64x48 over its first
result enlarged, by the canvas here and bicubic there) the random network amplifies those
differences once more: bound 12/255, measured 9.6/255, while the page's result is 1.8 times
as far (16.9/255) from stylize.py's one-pass file (bound: 1.5 times).

Skips when Chromium, Playwright or the browser runtime (web/node_modules: `npm ci` in
web/) is missing.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize_helpers import (
    TEST_PAD,
    make_test_model,
    natural_image,
    save,
    save_multi_style_test_model,
)
from stylize_helpers import run as run_stylize_py
from test_serve import assert_error, call, running_service, save_served_models
from test_serve_browser import CHROMIUM_ARGS, chromium_path, free_port

from fnst_jax import export, stroke
from fnst_jax.deploy import cli, web
from fnst_jax.stylize import loading

pytestmark = pytest.mark.usefixtures("fast_compile")

MAX_LEVEL_DIFFERENCE = 2  # see the module docstring
MAX_MEAN_UPSAMPLED_DIFFERENCE = 6  # mean over values, levels of 255: the module docstring
MAX_MEAN_DETAIL_DIFFERENCE = 12  # the same with the detail pass: the module docstring
RESULT_LOADED = "#result[data-loaded=true]"
MESSAGE_SHOWN = "#message:not([hidden])"
TIMEOUT_MS = 120_000  # a bound for each browser step; they take seconds
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
# Chromium's software WebGPU adapter (SwiftShader, on the CPU): the page's WebGPU path runs,
# slowly; its adapter has no shader-f16, so a float16 file falls back to WebAssembly.
WEBGPU_ARGS = ["--enable-unsafe-webgpu"]
ADAPTER_F16 = """async () => {
    const adapter = navigator.gpu && (await navigator.gpu.requestAdapter());
    return adapter ? adapter.features.has("shader-f16") : null;
}"""


@pytest.fixture(scope="module")
def browser_parts():
    """(playwright's sync_api, chromium's path), or skip."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    executable = chromium_path()
    problem = web.runtime_problem()
    if problem:
        pytest.skip(f"no browser runtime: {problem}")
    return sync_api, executable


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """candy.npz (one style), duo.npz (two styles, dots and waves) and painted.npz (one
    style, with a native size of 32 px: the stroke scale's "auto" runs it at 32 px)."""
    folder = tmp_path_factory.mktemp("models")
    export.save_model(folder / "candy.npz", make_test_model(), {"pad": TEST_PAD, "image_size": 64})
    save_multi_style_test_model(folder / "duo.npz")
    export.save_model(
        folder / "painted.npz",
        make_test_model(2),
        {"pad": TEST_PAD, "image_size": 64, "native_size": 32},
    )
    return folder


def write_site(model: Path, output: Path) -> Path:
    """The command line's --format web, in process (one small verification size: the
    exporter's check is tested in test_deploy.py; here it is the browser's output)."""
    argv = ["export", f"--model={model}", "--format=web", f"--output={output}"]
    assert cli.main([*argv, "--verify-sizes=24x24"]) == 0
    return output


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 30  # seconds a connection may sit idle

    def __init__(self, *args, requests: list[str], **kwargs):
        self.requests = requests
        super().__init__(*args, **kwargs)

    def log_request(self, code="-", size="-"):
        self.requests.append(self.path.split("?")[0])

    def log_message(self, format, *args):
        pass


@pytest.fixture
def static_site(tmp_path):
    """serve(folder) -> (base URL, the paths requested); servers stopped afterwards."""
    servers = []

    def serve(folder: Path) -> tuple[str, list[str]]:
        requests: list[str] = []
        handler = functools.partial(_CountingHandler, directory=str(folder), requests=requests)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}", requests

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


def result_pixels(page) -> np.ndarray:
    """The stylized image the page shows, read back through a canvas (the service page's
    CSP does not let scripts fetch its blob: URL)."""
    width, height, values = page.eval_on_selector(
        "#result",
        """img => {
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
            return [canvas.width, canvas.height, Array.from(rgba)];
        }""",
    )
    return np.array(values, np.uint8).reshape(height, width, 4)[..., :3]


def stylize_photo(page, photo: Path, *, size: str = "", model: str | None = None) -> None:
    """Choose the photo (and style), stylize at `size` ("" = the original size), wait."""
    page.set_input_files("#file", str(photo))
    if model:
        page.click(f".style-card[data-model={model}]")
    page.select_option("#size", size)
    page.click("#stylize")
    page.wait_for_selector(f"{RESULT_LOADED}, {MESSAGE_SHOWN}", timeout=TIMEOUT_MS)
    assert page.is_hidden("#message"), page.inner_text("#message")


def kept_brightness(stylizer, photo: Path, preserve_color: bool = False) -> np.ndarray:
    """What stylize.py writes for `photo` at stroke scale 1: the network's output given the
    photo's brightness (`fnst_jax.brightness`, colours kept again on request)."""
    pixels = np.asarray(Image.open(photo))
    raw = stylizer.stylize(pixels, preserve_color=preserve_color)
    return stroke.Stroke(1.0).finish(raw, pixels, preserve_color=preserve_color)


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    difference = np.abs(got.astype(int) - expected.astype(int))
    assert difference.max() <= MAX_LEVEL_DIFFERENCE, (difference.max(), (difference > 0).mean())


NATIVE_SIZES = """async (name) => {
    const { OnnxFile } = await import("/static/onnx_file.js");
    const entry = (await (await fetch("/v1/models")).json()).find((m) => m.name === name);
    const bytes = new Uint8Array(await (await fetch(entry.onnx.url)).arrayBuffer());
    return { file: new OnnxFile(bytes).nativeSize, listing: entry.native_size };
}"""


def mean_difference(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape
    return float(np.abs(got.astype(int) - expected.astype(int)).mean())


def assert_upsampled_close(
    got: np.ndarray, expected: np.ndarray, bound: float = MAX_MEAN_UPSAMPLED_DIFFERENCE
) -> None:
    """A result stylized below the output size and enlarged by the browser's canvas
    (imageSmoothingQuality "high") against stylize.py's (Pillow's bicubic), from working
    images resized differently too (see the module docstring)."""
    difference = mean_difference(got, expected)
    assert difference <= bound, difference


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector(".style-card")
    return page, errors


@pytest.mark.slow
def test_static_site_stylizes_on_the_device(browser_parts, models, static_site, tmp_path):
    sync_api, executable = browser_parts
    site = write_site(models / "candy.npz", tmp_path / "site")
    listed = json.loads((site / "site.json").read_text())["models"]
    assert [(m["name"], m["onnx"]["url"], m["onnx"]["dtype"]) for m in listed] == [
        ("candy", "models/candy.onnx", "float16")  # float16 unless --dtype says otherwise
    ]
    assert sorted(p.name for p in (site / "ort").iterdir()) == sorted(web.RUNTIME_FILES)
    assert "Cross-Origin-Embedder-Policy: require-corp" in (site / "_headers").read_text()
    url, requests = static_site(site)
    photos = {
        "tall": save(tmp_path / "tall.png", natural_image(53, 37, seed=1)),
        "wide": save(tmp_path / "wide.png", natural_image(31, 45, seed=2)),
        "tiled": save(tmp_path / "tiled.png", natural_image(21, 30, seed=3)),
    }
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not a photo")
    stylizer = loading.load_stylizer(models / "candy.npz")
    expected = {  # the page keeps the photo's brightness, as stylize.py does by default
        name: kept_brightness(stylizer, path, preserve_color=name == "wide")
        for name, path in photos.items()
    }

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS + FAKE_CAMERA_ARGS + WEBGPU_ARGS
        )
        try:
            page, errors = open_page(browser, url)
            assert page.is_hidden(".run-choice >> nth=0") and page.is_hidden("#api-links")
            assert page.locator(".style-card").count() == 1

            stylize_photo(page, photos["tall"])
            assert_close(result_pixels(page), expected["tall"])
            # WebGPU first; the float16 file needs shader-f16, else WebAssembly, saying why.
            f16 = page.evaluate(ADAPTER_F16)
            if f16:
                assert "on this device (WebGPU)" in page.inner_text("#timing")
            else:
                assert "on this device (WebAssembly, 1 thread)" in page.inner_text("#timing")
                if f16 is False:
                    assert "WebGPU could not run the model" in page.inner_text("#device-note")
            assert page.get_attribute("#download", "download") == "tall_candy.png"

            page.check("#preserve-color")
            stylize_photo(page, photos["wide"])
            assert_close(result_pixels(page), expected["wide"])
            page.uncheck("#preserve-color")

            # Not an image: said in words; the page still stylizes the next photo.
            page.set_input_files("#file", str(not_an_image))
            page.click("#stylize")
            page.wait_for_selector(MESSAGE_SHOWN, timeout=TIMEOUT_MS)
            message = page.inner_text("#message")
            assert "Could not stylize on this device" in message and "image" in message
            assert page.is_hidden("#result")
            stylize_photo(page, photos["tall"])
            assert_close(result_pixels(page), expected["tall"])
            assert requests.count("/models/candy.onnx") == 1  # downloaded once

            # The webcam (Chromium's fake camera), stylized live with its frame rate.
            page.select_option("#size", "256")
            page.click("#camera-start")
            page.click("#camera-live")
            page.wait_for_selector(
                f"#timing[data-rate]:not([data-rate='0.00']), {MESSAGE_SHOWN}", timeout=TIMEOUT_MS
            )
            assert page.is_hidden("#message"), page.inner_text("#message")
            assert "frames/s on this device" in page.inner_text("#timing")
            assert page.is_visible("#live")
            page.click("#camera-live")  # stop
            page.wait_for_selector("#live", state="hidden", timeout=TIMEOUT_MS)
            assert errors == []

            # Above max_pixels the page tiles (exact statistics): 2 tiles of the 48x40
            # network input (30x21 plus the pad of 8, rounded up to multiples of 4).
            tiled, errors = open_page(browser, f"{url}/?max_pixels=1024&tile=40")
            stylize_photo(tiled, photos["tiled"])
            assert_close(result_pixels(tiled), expected["tiled"])
            assert errors == []
        finally:
            browser.close()


@pytest.mark.slow
def test_multi_style_site_mixes_styles(browser_parts, models, static_site, tmp_path):
    sync_api, executable = browser_parts
    site = write_site(models / "duo.npz", tmp_path / "site")
    url, _ = static_site(site)
    photo = save(tmp_path / "photo.png", natural_image(29, 35, seed=4))
    expected = kept_brightness(
        loading.load_stylizer(models / "duo.npz").with_style([0.7, 0.3]), photo
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page, errors = open_page(browser, url)
            assert page.locator(".style-card").count() == 2
            page.click(".style-card[data-model=duo-dots]")
            page.eval_on_selector(
                "#blend-amount", "e => { e.value = '30'; e.dispatchEvent(new Event('input')); }"
            )
            stylize_photo(page, photo)
            assert_close(result_pixels(page), expected)
            assert errors == []
        finally:
            browser.close()


@pytest.mark.slow
def test_webgpu_runs_a_float32_site(browser_parts, models, static_site, tmp_path):
    """WebGPU, the page's first choice, on Chromium's software adapter (no GPU here): a
    float32 file (the adapter has no shader-f16) gives stylize.py's pixels."""
    sync_api, executable = browser_parts
    site = tmp_path / "site"
    argv = ["export", f"--model={models / 'candy.npz'}", "--format=web", f"--output={site}"]
    assert cli.main([*argv, "--dtype=float32", "--verify-sizes=24x24"]) == 0
    url, _ = static_site(site)
    photo = save(tmp_path / "photo.png", natural_image(19, 26, seed=6))
    expected = kept_brightness(loading.load_stylizer(models / "candy.npz"), photo)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS + WEBGPU_ARGS
        )
        try:
            page, errors = open_page(browser, url)
            if page.evaluate(ADAPTER_F16) is None:
                pytest.skip("this Chromium offers no WebGPU adapter, not even a software one")
            stylize_photo(page, photo)
            assert "on this device (WebGPU)" in page.inner_text("#timing")
            assert_close(result_pixels(page), expected)
            assert errors == []
        finally:
            browser.close()


@pytest.mark.slow
def test_service_page_runs_on_the_device_and_falls_back(browser_parts, models, tmp_path):
    """The service's page, ?run=device: its CSP allows WebAssembly, the model comes from
    GET /v1/models/candy/onnx; a model with a native size runs at it (stroke size auto,
    the default) and is enlarged to the output size; a TIFF goes to the server (with the
    stroke size), with the reason."""
    import uvicorn

    from fnst_jax.serve.app import create_app
    from fnst_jax.serve.models import load_models
    from fnst_jax.serve.service import Service, Settings

    sync_api, executable = browser_parts
    photo = save(tmp_path / "photo.png", natural_image(27, 41, seed=5))
    tiff = save(tmp_path / "photo.tif", natural_image(27, 41, seed=5))
    expected = kept_brightness(loading.load_stylizer(models / "candy.npz"), photo)
    painted = save(tmp_path / "painted.png", natural_image(48, 64, seed=9))
    assert run_stylize_py(models / "painted.npz", tmp_path / "auto.png", painted) == 0
    expected_auto = np.asarray(Image.open(tmp_path / "auto.png"))  # network at 32x24, 64x48
    one_pass = ["--nodetail-pass"]
    assert (
        run_stylize_py(models / "painted.npz", tmp_path / "one.png", painted, extra=one_pass) == 0
    )
    expected_one_pass = np.asarray(Image.open(tmp_path / "one.png"))  # network at 32x24
    served = load_models([models / "candy.npz", models / "painted.npz"], max_batch=1)
    service = Service(served, Settings(warm_sizes=(), max_batch=1))
    port = free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (server.started and service.ready):
            assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
            time.sleep(0.05)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page, errors = open_page(browser, f"http://127.0.0.1:{port}/?run=device")
                assert page.is_checked("input[name=run][value=device]")
                with page.expect_request("**/v1/models/candy/onnx?*"):
                    stylize_photo(page, photo)
                assert_close(result_pixels(page), expected)
                assert "on this device" in page.inner_text("#timing")
                # COOP/COEP: cross-origin isolated, so WebAssembly may use several threads.
                assert page.evaluate("crossOriginIsolated") is True

                # The native size the page runs "auto" at is the ONNX file's own property
                # (a static site, with no listing from a server, has only the file).
                native = page.evaluate(NATIVE_SIZES, "painted")
                assert native == {"file": 32, "listing": 32}
                stylize_photo(page, painted, model="painted")
                assert " ms at 32x24, then 64x48 · on this device" in page.inner_text("#timing")
                detailed = result_pixels(page)
                assert_upsampled_close(detailed, expected_auto, MAX_MEAN_DETAIL_DIFFERENCE)
                # ... nearer stylize.py's two passes than its one: the detail pass ran
                assert mean_difference(detailed, expected_one_pass) > 1.5 * mean_difference(
                    detailed, expected_auto
                )
                page.uncheck("#detail-pass")
                stylize_photo(page, painted, model="painted")
                assert " ms at 32x24 · on this device" in page.inner_text("#timing")
                assert_upsampled_close(result_pixels(page), expected_one_pass)
                page.check("#detail-pass")

                page.set_input_files("#file", str(tiff))  # browsers cannot decode TIFF
                with page.expect_request("**/v1/stylize?*") as request:
                    page.click("#stylize")
                assert "stroke_scale=auto" in request.value.url
                page.wait_for_selector(RESULT_LOADED, timeout=TIMEOUT_MS)
                assert "Ran on the server instead" in page.inner_text("#message")
                assert "batch of 1" in page.inner_text("#timing")
                assert errors == []
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(60)


# ----------------------------------------------------------------------------- no browser


def test_export_web_refuses_a_non_empty_folder_and_a_missing_runtime(tmp_path, monkeypatch):
    """Both are refused before the model is read (exit 2, one line saying what to do)."""
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "index.html").write_text("someone's site")
    argv = ["export", f"--model={tmp_path / 'never-read.npz'}", "--format=web"]
    stream = io.StringIO()
    assert cli.main([*argv, f"--output={occupied}"], stream) == 2
    assert "not empty; pass --overwrite" in stream.getvalue()
    assert (occupied / "index.html").read_text() == "someone's site"

    monkeypatch.setattr(web, "RUNTIME_DIR", tmp_path / "node_modules" / "onnxruntime-web")
    stream = io.StringIO()
    assert cli.main([*argv, f"--output={tmp_path / 'site'}"], stream) == 2
    assert "run `npm ci` in" in stream.getvalue() and str(web.WEB_DIR) in stream.getvalue()
    assert not (tmp_path / "site").exists()


def test_replacing_a_site_folder(tmp_path):
    """--overwrite: the new folder takes the old one's place whole; nothing else is left."""
    old, new = tmp_path / "site", tmp_path / ".site.building"
    old.mkdir()
    (old / "stale.txt").write_text("old")
    new.mkdir()
    (new / "index.html").write_text("new")
    web._replace_folder(new, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    assert sorted(p.name for p in old.iterdir()) == ["index.html"]


def test_service_serves_the_runtime_or_says_why_not(tmp_path, monkeypatch):
    """GET /ort/... (the runtime files only), the page's headers (WebAssembly allowed,
    cross-origin isolated), and /v1/info's `browser` with and without the runtime."""
    with running_service(save_served_models(tmp_path / "models")) as (app, _):
        page = call(app, "GET", "/")
        assert "'wasm-unsafe-eval'" in page.headers["content-security-policy"]
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert_error(call(app, "GET", "/ort/app.js"), 404, "not_found")
        if web.runtime_problem() is None:
            info = call(app, "GET", "/v1/info").json()["browser"]
            assert info["available"] is True and info["runtime_url"] == "/ort/"
            runtime = call(app, "GET", "/ort/ort.wasm.min.mjs")
            assert runtime.status_code == 200
            assert runtime.headers["content-type"].startswith("text/javascript")
            assert runtime.headers["cross-origin-resource-policy"] == "same-origin"
        monkeypatch.setattr(web, "RUNTIME_DIR", tmp_path / "nowhere")
        info = call(app, "GET", "/v1/info").json()["browser"]
        assert info["available"] is False and "npm ci" in info["reason"]
        missing = call(app, "GET", "/ort/ort.wasm.min.mjs")
        assert_error(missing, 404, "no_browser_runtime", "npm ci")
