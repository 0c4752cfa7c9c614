"""The styles of a run: which files, their names, the target Grams (a row per style) and the
metadata entries; the refusals before anything trains."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import smoke
from fnst_jax import image_io
from fnst_jax.losses import LossSpec, style_grams
from fnst_jax.style_targets import Styles, style_paths
from fnst_jax.train_step import TrainingError

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2")


def write_style(path: Path, size: tuple[int, int], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def config_with(**fields):
    config = smoke.get_config()
    config.update(fields)
    return config


def test_style_images_win_over_style_image_and_keep_their_order():
    config = config_with(style_image="one.png", style_images=("b/z.jpg", "a/y.png"))
    assert style_paths(config) == ("b/z.jpg", "a/y.png")
    assert style_paths(config_with(style_image="one.png")) == ("one.png",)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({}, "no style image"),
        ({"style_images": ("a/candy.jpg", "b/candy.png")}, r"\['candy'\] would name two styles"),
        ({"style_images": ("a.jpg", "b.jpg"), "loss.style_multipliers": (1.0,)}, "1 entries for 2"),
    ],
    ids=["none", "same-name", "multipliers"],
)
def test_refusals_name_the_fix(fields, message):
    config = smoke.get_config()
    config.style_image = ""
    for key, value in fields.items():
        if key.startswith("loss."):
            config.loss[key.removeprefix("loss.")] = value
        else:
            config[key] = value
    with pytest.raises(TrainingError, match=message):
        style_paths(config)


def test_an_unreadable_style_file_is_a_user_error_naming_it(tmp_path):
    with pytest.raises(TrainingError, match="style image: .*nope.png"):
        Styles.load(config_with(style_image=str(tmp_path / "nope.png")))


def test_styles_read_once_named_and_listed(tmp_path):
    paths = (
        write_style(tmp_path / "dots.png", (40, 30), 0),
        write_style(tmp_path / "w.png", (20, 20), 1),
    )
    styles = Styles.load(config_with(style_images=tuple(map(str, paths))))
    assert styles.names == ["dots", "w"]
    assert [p.shape for p in styles.pixels] == [(30, 40, 3), (20, 20, 3)]
    entries = styles.entries()
    assert [e["name"] for e in entries] == ["dots", "w"]
    assert entries[0]["image"] == str(paths[0].absolute())
    with Image.open(io.BytesIO(base64.b64decode(entries[0]["thumbnail"]))) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (40, 30)  # never enlarged


def test_target_grams_hold_a_row_per_style_at_the_style_size(tmp_path, vgg4):
    """Each row is the Gram of its style with the shorter side at `style_size`, whatever the
    file's shape."""
    paths = (
        write_style(tmp_path / "a.png", (48, 32), 0),
        write_style(tmp_path / "b.png", (20, 20), 1),
    )
    styles = Styles.load(config_with(style_images=tuple(map(str, paths))))
    grams = styles.target_grams(vgg4, style_size=16, spec=SPEC, dtype=jnp.float32)
    for index, rgb in enumerate(styles.pixels):
        resized = image_io.resize_shorter_side(rgb, 16)[None]
        expected = style_grams(vgg4, jnp.asarray(resized), SPEC.style_layers)
        for layer in SPEC.style_layers:
            assert grams[layer].shape[0] == 2
            # Jitted against eager: float32 rounding, relative to the largest entry.
            scale = float(np.abs(expected[layer]).max())
            np.testing.assert_allclose(
                grams[layer][index], expected[layer][0], rtol=1e-4, atol=1e-6 * scale
            )


def test_no_quality_grams_without_the_layers_they_need(tmp_path, vgg4):
    styles = Styles.load(config_with(style_image=str(write_style(tmp_path / "s.png", (20, 20), 0))))
    assert styles.quality_grams(vgg4, image_size=32) is None  # vgg4 stops at relu2_2
