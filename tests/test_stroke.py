"""The stroke scale (`fnst_jax.stroke`): working sizes, upsamplers, and stylize.py's
--stroke-scale end to end (S = 1 is the output without a stroke scale, bit for bit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize_helpers import TEST_PAD, make_test_model, natural_image, run, save

from fnst_jax import brightness, export, image_io, stroke
from fnst_jax.stylize.engine import Stylizer

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_parse_scale():
    assert stroke.parse_scale("auto") is None
    assert stroke.parse_scale(" AUTO ") is None
    assert stroke.parse_scale(None) is None
    assert stroke.parse_scale("2.5") == 2.5
    assert stroke.parse_scale(0.5) == 0.5
    for bad in ("0", "-1", "nan", "inf", "big", ""):
        with pytest.raises(stroke.StrokeScaleError, match="expected 'auto' or a positive"):
            stroke.parse_scale(bad)


def test_working_size():
    auto = stroke.Stroke(None, native=512)
    assert auto.scale_for(1024, 679) == 2.0
    assert auto.working_size(1024, 679) == (512, 340)
    assert auto.working_size(679, 1024) == (340, 512)  # portrait: the longest side counts
    assert auto.working_size(256, 170) == (256, 170)  # smaller photos: at their own size
    assert stroke.Stroke(0.5).working_size(256, 170) == (512, 340)  # unless asked
    assert stroke.Stroke(None, native=None).working_size(1024, 679) == (1024, 679)
    assert stroke.Stroke(1.0, native=512).working_size(1024, 679) == (1024, 679)
    assert stroke.Stroke(4.0).working_size(1000, 600) == (250, 150)
    assert stroke.Stroke(0.01).working_size(10, 10) == (80, 80)  # at most 8x the output
    with pytest.raises(stroke.StrokeScaleError, match=r"3x2 image for a 300x200 output"):
        stroke.Stroke(100.0).working_size(300, 200)
    with pytest.raises(stroke.StrokeScaleError, match="upsampler 'nearest'"):
        stroke.Stroke(upsampler="nearest")


def test_detail_pass_size():
    auto = stroke.Stroke(None, native=256)
    assert auto.detail_size(1024, 680) == (512, 340)  # twice the working size (256x170)
    assert auto.detail_size(400, 300) == (400, 300)  # at most the output size
    assert auto.detail_size(256, 170) is None  # the network at the output size: no pass
    assert stroke.Stroke(0.5).detail_size(100, 50) is None  # nor above it
    assert stroke.Stroke(None, native=256, detail=False).detail_size(1024, 680) is None
    assert stroke.Stroke(3.0).detail_size(900, 600) == (600, 400)
    calls = []

    def network(images):
        calls.append(images[0].shape)
        return [255 - image for image in images]

    first = [np.full((170, 256, 3), 10, np.uint8)]
    (last,) = auto.refine(first, 1024, 680, network)
    assert calls == [(340, 512, 3)] and last.shape == (340, 512, 3) and (last == 245).all()
    assert auto.refine(first, 256, 170, network)[0] is first[0] and len(calls) == 1


def test_native_size_of_styles():
    assert stroke.style_native_size([(470, 391)], None) == 470
    assert stroke.style_native_size([(470, 391)], 256) == 308  # mosaic.jpg as the quick start
    assert stroke.style_native_size([(470, 391), (512, 512)], 256) == 282
    assert stroke.native_size({"native_size": "512"}) == 512  # ONNX properties are strings
    assert stroke.native_size({}) is None and stroke.native_size(None) is None


def test_finish_same_size_is_the_input_itself_or_its_brightness_kept():
    image, photo = natural_image(20, 30), natural_image(20, 30, seed=4) // 2
    plain = stroke.Stroke(2.0, keep_brightness=False)
    assert plain.finish(image, photo, preserve_color=True) is image
    np.testing.assert_array_equal(
        stroke.Stroke(2.0).finish(image, photo), brightness.keep(image, photo)
    )
    # colours kept: the curve, then the photo's colours again with the curve's luminance
    kept = stroke.Stroke(2.0).finish(image, photo, preserve_color=True)
    curved = brightness.keep(image, photo)
    expected = image_io.to_uint8(image_io.transfer_luminance(curved, photo))
    np.testing.assert_array_equal(kept, expected)


@pytest.mark.parametrize("upsampler", stroke.UPSAMPLERS)
def test_upsamplers_reach_the_output_size_and_keep_colours_when_asked(upsampler):
    photo = natural_image(61, 90, seed=3)
    small = image_io.resize(255 - photo, (30, 20))  # a "stylized" result at a third
    setting = stroke.Stroke(3.0, upsampler=upsampler, keep_brightness=False)
    out = setting.finish(small, photo)
    assert out.shape == photo.shape and out.dtype == np.uint8
    kept = setting.finish(small, photo, preserve_color=True).astype(np.float32)
    # BT.601 chroma: the photo's wherever no channel was clipped
    to_chroma = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)
    unclipped = np.all((kept > 0) & (kept < 255), axis=-1)
    difference = (kept - photo.astype(np.float32)) @ to_chroma.T
    assert unclipped.mean() > 0.5
    assert np.abs(difference[unclipped]).max() < 1.5
    assert not np.array_equal(kept, out)


def test_guided_upsampling_brings_back_the_photos_edges():
    """A result that is the photo at a quarter of its size: the guided filter, led by the
    full-size photo, restores its sharp edges; bicubic cannot."""
    photo = np.zeros((128, 128, 3), np.uint8)
    photo[:, 61:] = 220  # a vertical edge, off the 4-px grid
    photo[40:90, 20:50] = 120
    small = image_io.resize(photo, (32, 32))
    guided = stroke.guided_upsample(small, photo).astype(np.float32)
    bicubic = stroke.Stroke(4.0).finish(small, photo).astype(np.float32)
    error_guided = np.abs(guided - photo).mean()
    error_bicubic = np.abs(bicubic - photo).mean()
    assert error_guided < 0.5 * error_bicubic
    assert np.abs(guided[:, 58:64] - photo[:, 58:64]).max() < 40  # the edge itself


@pytest.fixture(scope="module")
def native_model(tmp_path_factory) -> Path:
    """The test model recording a native size of 32 px."""
    path = tmp_path_factory.mktemp("model") / "dots.npz"
    export.save_model(
        path, make_test_model(), {"pad": TEST_PAD, "image_size": 32, "native_size": 32}
    )
    return path


def test_stylize_py_stroke_scale_1_is_the_plain_output(native_model, tmp_path):
    photo = natural_image(45, 70, seed=5)
    source = save(tmp_path / "in.png", photo)
    extra = ["--stroke-scale=1", "--nokeep-brightness"]
    assert run(native_model, tmp_path / "one.png", source, extra=extra) == 0
    plain = Stylizer.from_model_file(native_model).stylize(photo)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "one.png")), plain)
    # and with the default --keep-brightness, the same pixels through its tone curve
    assert run(native_model, tmp_path / "kept.png", source, extra=["--stroke-scale=1"]) == 0
    kept = np.asarray(Image.open(tmp_path / "kept.png"))
    np.testing.assert_array_equal(kept, brightness.keep(plain, photo))


@pytest.mark.parametrize("upsampler", stroke.UPSAMPLERS)
def test_stylize_py_auto_runs_at_the_native_size(native_model, tmp_path, upsampler):
    photo = natural_image(45, 70, seed=5)
    source = save(tmp_path / "in.png", photo)
    out = tmp_path / "auto.png"
    assert run(native_model, out, source, extra=[f"--upsampler={upsampler}"]) == 0
    setting = stroke.Stroke(None, native=32, upsampler=upsampler)
    working = setting.prepare(photo)
    assert working.shape == (21, 32, 3)
    stylizer = Stylizer.from_model_file(native_model)
    first = stylizer.stylize(working)
    detailed = stylizer.stylize(setting.detail_input(first, (64, 41)))  # the detail pass
    expected = setting.finish(detailed, photo)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)
    # --nodetail-pass: the first pass, upsampled
    one_pass = tmp_path / "one_pass.png"
    extra = [f"--upsampler={upsampler}", "--nodetail-pass"]
    assert run(native_model, one_pass, source, extra=extra) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(one_pass)), setting.finish(first, photo))


def test_stylize_py_rejects_a_bad_stroke_scale(native_model, tmp_path, capsys):
    source = save(tmp_path / "in.png", natural_image(20, 20))
    assert run(native_model, tmp_path / "o.png", source, extra=["--stroke-scale=big"]) == 2
    assert (
        "--stroke-scale: expected 'auto' or a positive number, not 'big'" in capsys.readouterr().err
    )
    # a scale too large for one image fails that image and names it; the run goes on
    big = save(tmp_path / "big.png", natural_image(200, 200))
    out = tmp_path / "out"
    assert run(native_model, out, source, big, extra=["--stroke-scale=8"]) == 1
    err = capsys.readouterr().err
    assert "in.png" in err and "stroke scale 8 would run the network on a 2x2 image" in err
    assert (out / "big_dots.png").is_file()
