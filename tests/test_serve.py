"""The HTTP service (`fnst_jax.serve`), in process: every route and error through the ASGI
app (httpx), batching through the service, the command line. The queue on its own:
test_serve_batcher.py; model discovery: test_serve_models.py; the stroke scale:
test_serve_stroke.py.

Models are random TransformerNets (`stylize_helpers.make_test_model`, outputs spanning
0..255) on 24-56 px images, so everything runs a few 64-px bucket programs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from stylize_helpers import (
    TEST_PAD,
    make_test_model,
    natural_image,
    save_multi_style_test_model,
    style_thumbnail_jpeg,
)
from stylize_helpers import run as run_stylize_py

from fnst_jax import brightness, export
from fnst_jax.serve import cli
from fnst_jax.serve.app import STATIC_DIR, create_app
from fnst_jax.serve.models import load_models
from fnst_jax.serve.service import Service, Settings, StylizeOptions
from fnst_jax.stylize import Stylizer

pytestmark = pytest.mark.usefixtures("fast_compile")


def save_served_models(folder: Path) -> Path:
    """Two exported test models: `mosaic` (with a style thumbnail) and `candy` (without)."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {
        "pad": TEST_PAD,
        "image_size": 64,
        "step": 400,
        "loss": {"style_layers": ["relu1_1", "relu2_1"], "content_layer": "relu2_2"},
    }
    export.save_model(
        folder / "mosaic.npz",
        make_test_model(0),
        {
            **metadata,
            "style_image": "/styles/mosaic.jpg",
            "style_thumbnail": base64.b64encode(style_thumbnail_jpeg()).decode(),
        },
    )
    export.save_model(folder / "candy.npz", make_test_model(1), metadata)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_served_models(tmp_path_factory.mktemp("served_models"))


@contextlib.contextmanager
def running_service(model_dir: Path, **settings):
    """A started Service (no warm-up unless asked) and its app; stopped afterwards."""
    settings.setdefault("warm_sizes", ())
    settings.setdefault("max_batch", 4)
    models = load_models([model_dir], max_batch=settings["max_batch"])
    service = Service(models, Settings(**settings))
    app = create_app(service)
    service.start()
    try:
        assert service.batcher.ready.wait(120), "the service did not get ready"
        yield app, service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def served(model_dir):
    with running_service(model_dir, max_wait_ms=5) as app_and_service:
        yield app_and_service


@pytest.fixture
def app(served):
    return served[0]


def call(app, method: str, url: str, **kwargs) -> httpx.Response:
    return calls(app, [(method, url, kwargs)])[0]


def calls(app, requests) -> list[httpx.Response]:
    """[(method, url, kwargs)] sent concurrently to the ASGI app; responses in order."""

    async def send_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            return await asyncio.gather(
                *(client.request(method, url, **kwargs) for method, url, kwargs in requests)
            )

    return asyncio.run(send_all())


def png_bytes(image: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def decode(response: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def assert_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["code"] == code, error
    for word in words:
        assert word in error["message"], error["message"]


def metric(app, name: str) -> float:
    """A metric's value from GET /metrics (0 when absent)."""
    text = call(app, "GET", "/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# ----------------------------------------------------------------------------- routes


def test_health_models_thumbnail_and_docs(app):
    assert call(app, "GET", "/healthz").json() == {"status": "ok"}
    ready = call(app, "GET", "/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "models": ["candy", "mosaic"],
    }
    models = {m["name"]: m for m in call(app, "GET", "/v1/models").json()}
    # Where the page's "On this device" downloads the model (tests/test_web_browser.py).
    browser_file = models["mosaic"].pop("onnx")
    assert browser_file["url"].startswith("/v1/models/mosaic/onnx?dtype=float16&v=")
    assert browser_file["style_index"] is None
    assert models["mosaic"] == {
        "name": "mosaic",
        "style": "mosaic",
        "thumbnail_url": "/v1/models/mosaic/style",
        "step": 400,
        "pad": TEST_PAD,
        "loss_layers": {"style": ["relu1_1", "relu2_1"], "content": "relu2_2"},
        "dtype": "float32",
        "image_size": 64,
        "native_size": None,
        "styles": [],
    }
    assert models["candy"]["thumbnail_url"] is None and models["candy"]["style"] is None

    style = call(app, "GET", "/v1/models/mosaic/style")
    assert style.headers["content-type"] == "image/jpeg"
    assert (
        style.content == style_thumbnail_jpeg()
        and max(Image.open(io.BytesIO(style.content)).size) <= 128
    )
    assert_error(call(app, "GET", "/v1/models/candy/style"), 404, "no_thumbnail", "candy")
    assert_error(call(app, "GET", "/v1/models/nope/style"), 404, "unknown_model", "nope")
    assert call(app, "GET", "/v1/models/..%2F..%2Fetc/style").status_code == 404

    openapi = call(app, "GET", "/openapi.json").json()
    assert {"/v1/stylize", "/v1/models", "/healthz", "/readyz"} <= set(openapi["paths"])
    assert "image/*" in openapi["paths"]["/v1/stylize"]["post"]["requestBody"]["content"]
    assert call(app, "GET", "/docs").status_code == 200
    info = call(app, "GET", "/v1/info").json()
    assert info["api_key_required"] is False and info["max_batch"] == 4
    assert_error(call(app, "GET", "/nowhere"), 404, "not_found")


def test_page_is_served_and_loads_nothing_from_elsewhere(app):
    page = call(app, "GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, content_type in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = call(app, "GET", f"/static/{name}")
        assert response.status_code == 200 and content_type in response.headers["content-type"]
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?(https?:)?//""", text), (
            path
        )
        assert "@import" not in text, path


def test_metrics_are_prometheus_text(app):
    call(app, "GET", "/healthz")
    text = call(app, "GET", "/metrics").text
    for name in [
        "fnst_http_requests_total",
        "fnst_stylize_latency_seconds_bucket",
        "fnst_queue_depth",
        "fnst_batch_size_bucket",
        "fnst_images_per_second",
        "fnst_ready 1.0",
        "fnst_peak_memory_bytes",
        "process_resident_memory_bytes",
    ]:
        assert name in text, name
    assert 'fnst_http_requests_total{route="/healthz",status="200"}' in text


# ----------------------------------------------------------------------------- results


def test_responses_are_byte_for_byte_what_stylize_py_writes(app, model_dir, tmp_path):
    """One request at a time runs batch 1: the program stylize.py runs for one image, so
    the same image and options give the same bytes (alpha, EXIF rotation, format)."""
    rgba = np.dstack(
        [
            natural_image(30, 40, seed=7),
            np.linspace(40, 255, 30 * 40, dtype=np.uint8).reshape(30, 40),
        ]
    )
    with_alpha = tmp_path / "in" / "alpha.png"
    with_alpha.parent.mkdir()
    Image.fromarray(rgba, "RGBA").save(with_alpha)
    rotated = tmp_path / "in" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored landscape, shown portrait
    Image.fromarray(natural_image(24, 44, seed=8)).save(rotated, quality=90, exif=exif)

    cases = [
        (with_alpha, "size=36&preserve_color=true", ["--size=36", "--preserve-color"], "png"),
        (rotated, "", [], "jpg"),
        (rotated, "format=webp&quality=80", ["--format=webp", "--quality=80"], "webp"),
    ]
    for source, query, flags, extension in cases:
        output = tmp_path / f"out_{extension}.{extension}"
        assert run_stylize_py(model_dir / "mosaic.npz", output, source, extra=flags) == 0
        response = call(
            app,
            "POST",
            f"/v1/stylize?model=mosaic&{query}",
            content=source.read_bytes(),
            headers={"Content-Type": "image/png" if extension == "png" else "image/jpeg"},
        )
        assert response.status_code == 200, response.text
        assert (
            response.headers["content-type"]
            == f"image/{'jpeg' if extension == 'jpg' else extension}"
        )
        assert response.headers["x-batch-size"] == "1"
        assert float(response.headers["x-network-time-ms"]) > 0
        assert "network;dur=" in response.headers["server-timing"]
        assert response.content == output.read_bytes(), (source.name, query)
    assert Image.open(io.BytesIO(response.content)).size == (24, 44)  # EXIF applied


def test_multipart_upload_equals_raw_body(app):
    data = png_bytes(natural_image(20, 28, seed=2))
    raw = call(
        app, "POST", "/v1/stylize?model=candy", content=data, headers={"Content-Type": "image/png"}
    )
    form = call(
        app, "POST", "/v1/stylize?model=candy", files={"image": ("photo.png", data, "image/png")}
    )
    assert raw.status_code == form.status_code == 200
    assert raw.content == form.content


@pytest.mark.slow
def test_32_concurrent_requests_over_3_sizes_and_2_models_get_their_own_results(model_dir):
    """Each response is its own image's stylization by its own model. Batching changes
    only float rounding between compiled batch sizes: at most 1 level of 255 (as in the
    engine's batch test)."""
    sizes = [(24, 24), (28, 40), (56, 48)]  # buckets (64, 64), (64, 64), (128, 64) with pad 8
    names = ["mosaic", "candy"]
    requests, expected = [], []
    references = {name: Stylizer.from_model_file(model_dir / f"{name}.npz") for name in names}
    for index in range(32):
        height, width = sizes[index % 3]
        name = names[(index // 3) % 2]
        image = natural_image(height, width, seed=100 + index)
        requests.append(
            (
                "POST",
                f"/v1/stylize?model={name}&format=png&keep_brightness=false",  # the network's
                {"content": png_bytes(image), "headers": {"Content-Type": "image/png"}},
            )
        )
        expected.append((name, image))
    with running_service(model_dir, max_batch=4, max_wait_ms=150, queue_size=64) as (app, _):
        responses = calls(app, requests)
        batch_sizes = [int(r.headers["x-batch-size"]) for r in responses]
        for response, (name, image) in zip(responses, expected, strict=True):
            assert response.status_code == 200, response.text
            assert response.headers["x-model"] == name
            result = decode(response)
            assert result.shape == image.shape
            reference = references[name].stylize(image)
            assert np.abs(result.astype(int) - reference).max() <= 1
        assert max(batch_sizes) > 1, batch_sizes
        calls_made = metric(app, "fnst_batch_size_count")
        assert metric(app, "fnst_batch_size_sum") == 32
        assert calls_made < 32  # batching happened, and the histogram shows it
        assert metric(app, 'fnst_batch_size_bucket{le="1.0"}') < calls_made


# ----------------------------------------------------------------------------- errors


def test_bad_requests_get_json_errors_naming_the_reason(app):
    image = png_bytes(natural_image(20, 20))
    png = {"Content-Type": "image/png"}

    def post(url="/v1/stylize?model=mosaic", **kwargs):
        return call(app, "POST", url, **kwargs)

    assert_error(post(content=b"", headers=png), 400, "empty_body", "empty")
    assert_error(post(content=b"hello, world", headers=png), 415, "not_an_image", "not an image")
    assert_error(
        post(content=image[: len(image) // 2], headers=png), 400, "corrupt_image", "truncated"
    )
    assert_error(
        post(content=b"{}", headers={"Content-Type": "application/json"}),
        415,
        "unsupported_media_type",
        "multipart",
    )
    assert_error(
        post(files={"photo": ("a.png", image, "image/png")}), 400, "bad_multipart", "'image'"
    )
    assert_error(
        post("/v1/stylize?model=starry", content=image, headers=png),
        404,
        "unknown_model",
        "candy, mosaic",
    )
    assert_error(post("/v1/stylize", content=image, headers=png), 400, "model_required")
    assert_error(
        post("/v1/stylize?model=mosaic&format=gif", content=image, headers=png),
        422,
        "invalid_parameter",
        "format",
    )
    assert_error(
        post("/v1/stylize?model=mosaic&quality=0", content=image, headers=png),
        422,
        "invalid_parameter",
        "quality",
    )
    # The service is still up and serving.
    assert post(content=image, headers=png).status_code == 200


def test_upload_and_pixel_limits(model_dir):
    bomb = io.BytesIO()
    Image.new("1", (3000, 3000)).save(bomb, "PNG")  # 9 Mpx in a ~1 KB file
    small = png_bytes(natural_image(30, 40))
    with running_service(model_dir, max_upload_mb=0.02, max_pixels=64 * 64) as (app, _):
        too_big = np.random.default_rng(0).integers(0, 255, 30_000, dtype=np.uint8).tobytes()
        response = call(app, "POST", "/v1/stylize?model=mosaic", content=too_big)
        assert_error(response, 413, "upload_too_large", "20,971")
        started = time.monotonic()
        response = call(app, "POST", "/v1/stylize?model=mosaic", content=bomb.getvalue())
        assert_error(response, 413, "too_many_pixels", "3000x3000", "4,096")
        assert time.monotonic() - started < 2  # refused from the header, not decoded
        response = call(app, "POST", "/v1/stylize?model=mosaic&size=100", content=small)
        assert_error(response, 413, "too_many_pixels", "size=100", "100x75")
        assert call(app, "POST", "/v1/stylize?model=mosaic", content=small).status_code == 200


def test_full_queue_answers_503_with_retry_after(model_dir):
    with running_service(model_dir, queue_size=2) as (app, service):
        tickets = [service.batcher.reserve(), service.batcher.reserve()]
        image = png_bytes(natural_image(20, 20))
        response = call(app, "POST", "/v1/stylize?model=mosaic", content=image)
        assert_error(response, 503, "busy", "busy")
        assert int(response.headers["retry-after"]) >= 1
        assert metric(app, "fnst_queue_depth") == 2
        for ticket in tickets:
            ticket.release()
        assert call(app, "POST", "/v1/stylize?model=mosaic", content=image).status_code == 200


def test_timed_out_request_gets_504_and_never_reaches_the_network(model_dir):
    with running_service(model_dir, timeout_s=0.3, max_batch=4, max_wait_ms=1500) as (app, _):
        response = call(
            app, "POST", "/v1/stylize?model=mosaic", content=png_bytes(natural_image(20, 20))
        )
        assert_error(response, 504, "timeout", "0.3 s")
        time.sleep(1.6)  # past the batch's wait: the worker drops the cancelled request
        assert metric(app, "fnst_network_seconds_count") == 0
        assert metric(app, "fnst_queue_depth") == 0


def test_client_that_disconnects_has_its_request_dropped(model_dir):
    """The request waits for a batch partner; its client leaves meanwhile: the service
    answers nothing and the network never runs for it."""
    with running_service(model_dir, max_batch=4, max_wait_ms=1000) as (app, service):

        async def leave_early():
            return await service.stylize(
                png_bytes(natural_image(20, 20)),
                "image/png",
                StylizeOptions(model="mosaic"),
                time.monotonic(),
                lambda: asyncio.sleep(0.2),  # the client disconnects after 0.2 s
            )

        assert asyncio.run(leave_early()) is None
        time.sleep(1.2)  # past the batch's wait
        assert metric(app, "fnst_network_seconds_count") == 0
        assert metric(app, "fnst_queue_depth") == 0


def test_api_key(model_dir):
    image = png_bytes(natural_image(20, 20))
    with running_service(model_dir, api_key="s3cret") as (app, _):
        url = "/v1/stylize?model=mosaic"
        response = call(app, "POST", url, content=image)
        assert_error(response, 401, "unauthorized", "API key")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(
            call(app, "POST", url, content=image, headers={"X-API-Key": "wrong"}),
            401,
            "unauthorized",
        )
        assert (
            call(
                app, "POST", url, content=image, headers={"Authorization": "Bearer s3cret"}
            ).status_code
            == 200
        )
        assert (
            call(app, "POST", url, content=image, headers={"X-API-Key": "s3cret"}).status_code
            == 200
        )
        assert call(app, "GET", "/v1/models").status_code == 200
        assert call(app, "GET", "/v1/info").json()["api_key_required"] is True


def test_cors_only_for_the_given_origins(app, model_dir):
    preflight = {"Origin": "http://other.test", "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin"
        not in call(app, "OPTIONS", "/v1/stylize", headers=preflight).headers
    )
    assert (
        "access-control-allow-origin"
        not in call(app, "GET", "/v1/models", headers={"Origin": "http://other.test"}).headers
    )
    with running_service(model_dir, cors_origins=("http://page.test",)) as (cors_app, _):
        allowed = call(cors_app, "GET", "/v1/models", headers={"Origin": "http://page.test"})
        assert allowed.headers["access-control-allow-origin"] == "http://page.test"
        other = call(cors_app, "GET", "/v1/models", headers={"Origin": "http://other.test"})
        assert "access-control-allow-origin" not in other.headers


def test_not_ready_while_warming_up_then_ready(model_dir):
    """Warm-up compiles the configured sizes before /readyz says ready; requests meanwhile
    get 503 not_ready."""
    models = load_models([model_dir], max_batch=2)
    service = Service(models, Settings(warm_sizes=((20, 20),), max_batch=2))
    app = create_app(service)
    release = threading.Event()
    original = service.warm_up

    def slow_warm_up(index):
        release.wait(30)
        original(index)

    service.warm_up = slow_warm_up
    service.start()
    try:
        ready = call(app, "GET", "/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "starting"
        response = call(
            app, "POST", "/v1/stylize?model=mosaic", content=png_bytes(natural_image(20, 20))
        )
        assert_error(response, 503, "not_ready")
        assert "retry-after" in response.headers
        assert call(app, "GET", "/healthz").status_code == 200
        release.set()
        assert service.batcher.ready.wait(120)
        assert call(app, "GET", "/readyz").status_code == 200
        # Both models share one architecture, so one of them compiles for both.
        compiled = set().union(*(m.stylizers[0].compiled_shapes for m in models.values()))
        assert compiled == {(1, 64, 64, 3), (2, 64, 64, 3)}
    finally:
        release.set()
        service.stop()


# ----------------------------------------------------------------------------- command line


def test_command_line_errors_exit_2(tmp_path, capsys):
    assert cli.main(["serve.py"]) == 2
    assert "--models is required" in capsys.readouterr().err
    assert cli.main(["serve.py", "--models", str(tmp_path / "missing.npz")]) == 2
    assert "no such model" in capsys.readouterr().err
    assert cli.main(["serve.py", "--models", str(tmp_path), "--warm-sizes", "big"]) == 2
    assert "--warm-sizes" in capsys.readouterr().err
    assert cli.main(["serve.py", "--models", str(tmp_path), "--max_batch", "0"]) == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err
    assert cli.main(["serve.py", "--help"]) == 0
    assert "--max-wait-ms" in capsys.readouterr().out


def test_multi_style_model_serves_each_style(tmp_path):
    """Each style of a multi-style model is its own entry, MODEL-STYLE, computing that style."""
    path = save_multi_style_test_model(tmp_path / "duo.npz")
    models = load_models([path], max_batch=2)
    assert sorted(models) == ["duo-dots", "duo-waves"]
    assert models["duo-waves"].describe()["style"] == "waves"
    image = natural_image(20, 24, seed=1)
    reference = Stylizer.from_model_file(path)
    for style, name in enumerate(["duo-dots", "duo-waves"]):
        np.testing.assert_array_equal(
            models[name].stylizers[0].stylize(image), reference.with_style(style).stylize(image)
        )


def test_mix_query_mixes_the_styles_of_a_multi_style_model(tmp_path):
    """?mix=NAME:W,... on an entry of a multi-style model stylizes in that mix (what the
    engine computes for it); requests with different mixes and the entry's own style, sent
    together, each get theirs. A one-style model or a bad mix is a 400 naming the reason."""
    folder = tmp_path / "models"
    folder.mkdir()
    save_multi_style_test_model(folder / "duo.npz")
    export.save_model(folder / "solo.npz", make_test_model(0), {"pad": TEST_PAD})
    image = natural_image(20, 24, seed=1)
    reference = Stylizer.from_model_file(folder / "duo.npz")
    with running_service(folder, max_wait_ms=50) as (app, _):
        (entry,) = [m for m in call(app, "GET", "/v1/models").json() if m["name"] == "duo-dots"]
        assert entry["styles"] == ["dots", "waves"]
        body = png_bytes(image)
        responses = calls(
            app,
            [
                ("POST", "/v1/stylize?model=duo-dots&mix=dots:1,waves:3", {"content": body}),
                ("POST", "/v1/stylize?model=duo-dots&mix=waves:1", {"content": body}),
                ("POST", "/v1/stylize?model=duo-dots", {"content": body}),
            ],
        )
        for response, style in zip(responses, [(0.25, 0.75), (0.0, 1.0), (1.0, 0.0)], strict=True):
            assert response.status_code == 200, response.text
            expected = brightness.keep(reference.with_style(style).stylize(image), image)
            np.testing.assert_array_equal(decode(response), expected)
        bad = call(app, "POST", "/v1/stylize?model=duo-dots&mix=dots:1,stripes:1", content=body)
        assert_error(bad, 400, "bad_mix", "stripes", "dots, waves")
        bad = call(app, "POST", "/v1/stylize?model=duo-dots&mix=dots:0", content=body)
        assert_error(bad, 400, "bad_mix", "sum to 0")
        solo = call(app, "POST", "/v1/stylize?model=solo&mix=dots:1", content=body)
        assert_error(solo, 400, "bad_mix", "one style")
