"""Validation during training: the images it lists for evaluate (a TFDS source's written
once, a folder's every held-out file) and how a multi-style model's figures combine."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

from configs import smoke
from fnst_jax import data, validation

COCO_VALIDATION_IMAGES = 6


def identity_colour(index: int) -> tuple[int, int, int]:
    return ((index * 37 + 20) % 256, (index * 91 + 60) % 256, (index * 53 + 100) % 256)


def test_tfds_validation_images_are_written_for_evaluate(tmp_path, monkeypatch):
    """A TFDS source's records are not files evaluate can read: the validation images are
    written once as PNGs and listed. Tiny COCO zips through the TF-free builder (as in
    test_data.py); validation image i is flat identity_colour(i), named ..._{i:012d}.jpg."""
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    for split, count in (("train2014", 2), ("val2014", COCO_VALIDATION_IMAGES)):
        with zipfile.ZipFile(manual_dir / f"{split}.zip", "w") as archive:
            for index in range(count):
                buffer = io.BytesIO()
                Image.new("RGB", (64, 80), identity_colour(index)).save(buffer, "PNG")
                archive.writestr(f"{split}/COCO_{split}_{index:012d}.jpg", buffer.getvalue())
    config = smoke.get_config()
    config.data.update(
        source="tfds:fnst_coco_images/2014",
        tfds_data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual_dir),
        download=True,
    )
    config.num_validation_images = 3
    workdir = tmp_path / "run"

    images = validation.prepare_validation(config, workdir)
    listed = (workdir / validation.VALIDATION_FILE).read_text().splitlines()
    assert len(listed) == len(images) == 3
    for path, image in zip(listed, images, strict=True):
        assert Path(path).parent == workdir.absolute() / validation.VALIDATION_DIR
        # The file holds the record its name says (the colour of COCO image number N).
        number = int(re.search(r"COCO_val2014_(\d{12})_jpg\.png$", path).group(1))
        with Image.open(path) as written:
            pixels = np.asarray(written)
        np.testing.assert_array_equal(pixels, image)
        assert np.abs(pixels.reshape(-1, 3).mean(0) - identity_colour(number)).max() < 1

    # Written once: a resumed run reads the same records and leaves the files alone.
    before = {path: Path(path).stat().st_mtime_ns for path in listed}
    monkeypatch.setattr(validation.image_io, "write_image", None)  # any write would fail
    validation.prepare_validation(config, workdir)
    assert (workdir / validation.VALIDATION_FILE).read_text().splitlines() == listed
    assert {path: Path(path).stat().st_mtime_ns for path in listed} == before


def test_folder_validation_lists_every_held_out_file(tmp_path):
    """A folder's records are files: every held-out one is listed (not only the validation
    batch's), none is trained on, and nothing is written beside them."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(12):
        Image.new("RGB", (80, 72), identity_colour(index)).save(folder / f"{index:02d}.png")
    config = smoke.get_config()
    config.data.source = f"folder:{folder}"
    config.num_validation_images = 1
    workdir = tmp_path / "run"
    validation.prepare_validation(config, workdir)

    listed = (workdir / validation.VALIDATION_FILE).read_text().splitlines()
    source, training = data.training_records(config.data, image_size=32, seed=0)
    trained = {source.describe(int(i)) for i in training}
    everything = {str(path) for path in folder.iterdir()}
    assert len(listed) > config.num_validation_images  # 0.25 of 12 files are held out
    assert set(listed) | trained == everything and not set(listed) & trained
    assert not (workdir / validation.VALIDATION_DIR).exists()


def test_several_styles_log_their_mean_and_each_style_under_its_name():
    """Scored once per style; the figures are the means over the styles plus each style's
    own, and the outputs a row per style."""
    images = np.zeros((2, 4, 4, 3), np.float32)

    def evaluate(params, batch, vgg, target_grams, style):
        terms = {"total": jnp.float32(params["total"][style]), "style": jnp.float32(style)}
        return terms, jnp.full(batch.shape, float(style))

    validate = validation.Validation(
        evaluate=evaluate,
        images=images,
        vgg=None,
        target_grams={},
        quality_grams=None,
        names=["candy", "udnie"],
    )
    figures, stylized = validate({"total": [1.0, 3.0]})
    assert figures == {
        "total": 2.0,
        "style": 0.5,
        "candy/total": 1.0,
        "candy/style": 0.0,
        "udnie/total": 3.0,
        "udnie/style": 1.0,
    }
    assert stylized.shape == (2, *images.shape) and stylized[1].min() == 1.0
    one = validation.Validation(
        evaluate=evaluate,
        images=images,
        vgg=None,
        target_grams={},
        quality_grams=None,
        names=["candy"],
    )
    figures, stylized = one({"total": [1.0]})
    assert figures == {"total": 1.0, "style": 0.0} and stylized.shape == images.shape
