"""Keeping the photo's brightness (`fnst_jax.brightness`) and stylize.py's --keep-brightness."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from stylize_helpers import TEST_PAD, make_test_model, natural_image, run, save

from fnst_jax import brightness, export, image_io, quality
from fnst_jax.stylize.engine import Stylizer

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_mean_luma_is_what_quality_measures():
    image = natural_image(37, 53, seed=3)
    assert brightness.mean_luma(image) == pytest.approx(float(quality.luma(image[None]).mean()))


@pytest.mark.parametrize("target", [30.0, 90.0, 200.0])
def test_the_curve_gives_the_photos_mean_luma(target):
    output = natural_image(64, 80, seed=1)
    photo = np.full((10, 12, 3), 0, np.uint8) + np.array([target] * 3, np.uint8)
    kept = brightness.keep(output, photo)
    assert kept.shape == output.shape and kept.dtype == np.uint8
    assert brightness.mean_luma(kept) == pytest.approx(target, abs=0.5)
    # one curve for every channel: the order of tones is kept, black and white stay
    order = np.argsort(output[..., 0].ravel(), kind="stable")
    assert (np.diff(kept[..., 0].ravel()[order].astype(int)) >= 0).all()
    curve = brightness.curve(brightness.gamma_for(output, target))
    assert curve[0] == 0 and curve[255] == 255


def test_an_output_as_bright_as_the_photo_is_unchanged_and_black_stays_black():
    output = natural_image(40, 40, seed=2)
    assert np.abs(brightness.keep(output, output).astype(int) - output).max() <= 1
    black = np.zeros((8, 8, 3), np.uint8)
    np.testing.assert_array_equal(brightness.keep(black, natural_image(8, 8)), black)
    # an unreachable target takes the nearest bound of the curve, not an error
    white = np.full((8, 8, 3), 255, np.uint8)
    assert brightness.keep(natural_image(8, 8), white).mean() > 200


def test_stylize_py_keeps_the_photos_brightness_unless_asked(tmp_path):
    model = tmp_path / "dots.npz"
    export.save_model(model, make_test_model(), {"pad": TEST_PAD, "image_size": 32})
    night = (natural_image(40, 60, seed=4) * 0.25).astype(np.uint8)  # a dark photo
    source = save(tmp_path / "night.png", night)
    raw = Stylizer.from_model_file(model).stylize(night)
    assert run(model, tmp_path / "kept.png", source) == 0
    kept = np.asarray(Image.open(tmp_path / "kept.png"))
    np.testing.assert_array_equal(kept, brightness.keep(raw, night))
    assert brightness.mean_luma(kept) == pytest.approx(brightness.mean_luma(night), abs=0.5)
    assert run(model, tmp_path / "own.png", source, extra=["--nokeep-brightness"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "own.png")), raw)
    assert image_io.luma(raw).mean() > 2 * image_io.luma(night).mean()
