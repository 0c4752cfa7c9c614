"""The service's stroke scale (`?stroke_scale=`, `?upsampler=`, `fnst_jax.stroke`): the bytes
`stylize.py --stroke-scale` writes (with `?detail_pass=` and `?keep_brightness=`), the
network at the model's native size for "auto", and bad values refused with the parameter's
name while the service keeps serving.

Models: the random test model saved twice, without a native size (`plain`) and with one of
32 px (`native`); images of 20-56 px, so every network call runs a 64-px bucket program.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from stylize_helpers import TEST_PAD, make_test_model, natural_image, save
from stylize_helpers import run as run_stylize_py
from test_serve import assert_error, call, decode, png_bytes, running_service

from fnst_jax import export, stroke
from fnst_jax.stylize import Stylizer

pytestmark = pytest.mark.usefixtures("fast_compile")

NATIVE_SIZE = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stroke_models")
    metadata = {"pad": TEST_PAD, "image_size": 64}
    export.save_model(folder / "plain.npz", make_test_model(0), metadata)
    export.save_model(
        folder / "native.npz", make_test_model(1), {**metadata, "native_size": NATIVE_SIZE}
    )
    return folder


@pytest.fixture(scope="module")
def app(model_dir):
    with running_service(model_dir, max_wait_ms=5) as (app, _):
        yield app


def post(app, query: str, body: bytes):
    return call(
        app, "POST", f"/v1/stylize?{query}", content=body, headers={"Content-Type": "image/png"}
    )


def test_models_list_their_native_size(app):
    models = {m["name"]: m for m in call(app, "GET", "/v1/models").json()}
    assert models["native"]["native_size"] == NATIVE_SIZE
    assert models["plain"]["native_size"] is None


def test_scale_1_is_the_output_without_a_stroke_scale(app, model_dir):
    """S = 1, and "auto" for a model without a native size, run the network at the output
    size: the very bytes of a request without the parameter (and the engine's pixels)."""
    image = natural_image(30, 44, seed=1)
    body = png_bytes(image)
    plain = post(app, "model=plain", body)
    assert plain.status_code == 200, plain.text
    assert plain.headers["x-working-size"] == "44x30"
    for query in ("model=plain&stroke_scale=1", "model=plain&stroke_scale=auto"):
        response = post(app, query, body)
        assert response.status_code == 200, response.text
        assert response.content == plain.content, query
    native = post(app, "model=native&stroke_scale=1&preserve_color=true", body)
    assert native.headers["x-working-size"] == "44x30"
    reference = Stylizer.from_model_file(model_dir / "native.npz")
    # stylize.py's finish: the photo's brightness, then its colours again
    raw = reference.stylize(image, preserve_color=True)
    expected = stroke.Stroke(1.0).finish(raw, image, preserve_color=True)
    assert (decode(native) == expected).all()


@pytest.mark.parametrize(
    "query, flags, working",
    [
        # auto: S = 48 / 32 = 1.5, the network at the native size (32 px longest side),
        # then its detail pass at the output size
        ("size=48", ["--size=48"], "32x23"),
        ("size=48&detail_pass=false", ["--size=48", "--nodetail-pass"], "32x23"),
        (
            "size=48&stroke_scale=2&upsampler=guided&preserve_color=true",
            ["--size=48", "--stroke-scale=2", "--upsampler=guided", "--preserve-color"],
            "24x17",
        ),
    ],
)
def test_rescaled_requests_are_what_stylize_py_writes(
    app, model_dir, tmp_path, query, flags, working
):
    """The network at the working size, the result upsampled to the requested size: byte
    for byte stylize.py's file for the same flags (one request at a time: batch 1, the
    program stylize.py runs)."""
    photo = save(tmp_path / "photo.png", natural_image(40, 56, seed=2))
    output = tmp_path / "out.png"
    assert run_stylize_py(model_dir / "native.npz", output, photo, extra=flags) == 0
    response = post(app, f"model=native&{query}", photo.read_bytes())
    assert response.status_code == 200, response.text
    assert response.headers["x-working-size"] == working
    detail = None if "detail_pass=false" in query else "48x34"
    assert response.headers.get("x-detail-size") == detail
    assert Image.open(output).size == (48, 34)
    assert response.content == output.read_bytes()


def test_bad_stroke_scales_are_refused_and_the_service_goes_on(app, model_dir):
    body = png_bytes(natural_image(20, 20, seed=3))
    for bad in ("big", "0", "-1", "nan"):
        response = post(app, f"model=native&stroke_scale={bad}", body)
        assert_error(response, 422, "invalid_parameter", "stroke_scale", "expected 'auto'")
    response = post(app, "model=native&upsampler=nearest", body)
    assert_error(response, 422, "invalid_parameter", "upsampler")
    # Too coarse for this photo: a 1x1 network input.
    response = post(app, "model=native&stroke_scale=20", body)
    assert_error(response, 422, "invalid_parameter", "stroke_scale", "16 px")
    assert post(app, "model=native", body).status_code == 200
    # Too fine for the service's pixel limit: 80x80 network input for a 40x40 output.
    with running_service(model_dir, max_pixels=64 * 64) as (limited, _):
        response = post(limited, "model=native&stroke_scale=0.5", png_bytes(natural_image(40, 40)))
        assert_error(response, 413, "too_many_pixels", "stroke_scale=0.5", "80x80")
