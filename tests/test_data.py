"""Tests for fnst_jax.data: sources, preprocessing, and the grain pipeline's guarantees."""

from __future__ import annotations

import io
import json
import logging
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import default
from fnst_jax import data, image_io
from fnst_jax.data import preprocess, sources
from fnst_jax.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE_SIZE = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Helpers: files written into tmp_path.


def identity_colour(index: int) -> tuple[int, int, int]:
    """A distinct flat colour per image, so a batch tells which images it holds."""
    return ((index * 37 + 20) % 256, (index * 91 + 60) % 256, (index * 53 + 100) % 256)


def identify(batch: np.ndarray, count: int) -> list[int]:
    """Image indices of a batch of flat-coloured images (-1 if none matches)."""
    palette = np.array([identity_colour(i) for i in range(count)], np.float64)
    means = batch.reshape(len(batch), -1, 3).mean(axis=1)
    distances = np.abs(means[:, None, :] - palette[None, :, :]).max(axis=-1)
    return [int(np.argmin(row)) if row.min() < 3 else -1 for row in distances]


def encode(image: Image.Image, image_format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_16bit_rgb(width: int, height: int, value: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), every sample equal to `value`."""
    row = b"\x00" + struct.pack(">H", value) * 3 * width
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(row * height))
        + png_chunk(b"IEND", b"")
    )


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but which holds almost no pixel data."""
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + png_chunk(b"IEND", b"")
    )


def write_colour_folder(root: Path, count: int, *, size=(48, 40)) -> Path:
    """`count` flat-colour PNGs, image i in colour identity_colour(i), in nested folders."""
    for index in range(count):
        path = root / f"group{index % 3}" / f"image_{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, identity_colour(index)).save(path)
    return root


def write_bad_files(root: Path) -> list[Path]:
    """One file of each kind that must be skipped (with min_size=16, max_pixels=100_000)."""
    root.mkdir(parents=True, exist_ok=True)
    good_jpeg = encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    bad = {
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "empty.jpg": b"",
        "text.jpg": b"this is not an image\n",
        "tiny.png": encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG"),
        "bomb.png": png_bomb(12_000, 12_000),
    }
    for name, payload in bad.items():
        (root / name).write_bytes(payload)
    return [root / name for name in bad]


def default_data_config() -> ml_collections.ConfigDict:
    """The data block of the real run (configs/default.py), to be overridden per test."""
    return default.get_config().data


def folder_config(path: Path, **overrides) -> ml_collections.ConfigDict:
    config = default_data_config()
    config.source = f"folder:{path}"
    config.validation_fraction = 0.0
    config.min_size = 16
    config.max_pixels = 100_000
    config.read_threads = 1
    config.update(overrides)
    return config


def take(iterator, count: int) -> list[np.ndarray]:
    return [next(iterator) for _ in range(count)]


# ---------------------------------------------------------------------------------------------
# Preprocessing.


def _rgba_half_transparent() -> Image.Image:
    image = Image.new("RGBA", (40, 40), (200, 10, 10, 255))
    image.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half transparent black
    return image


def _exif_rotated_jpeg() -> bytes:
    stored = Image.new("RGB", (80, 40), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 40, 40))  # red left half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: stored left becomes top
    return encode(stored, "JPEG", quality=95, exif=exif)


MODE_CASES = {
    # name: (encoded bytes, expected (width, height), expected colour at (x, y) -> RGB)
    "rgb_jpeg": (
        encode(Image.new("RGB", (40, 30), (30, 120, 220)), "JPEG", quality=95),
        (40, 30),
        {(20, 15): (30, 120, 220)},
    ),
    "rgba_png": (
        encode(_rgba_half_transparent(), "PNG"),
        (40, 40),
        {(5, 5): (255, 255, 255), (35, 5): (200, 10, 10)},
    ),
    "palette_png": (
        encode(
            Image.new("RGB", (30, 30), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE),
            "PNG",
        ),
        (30, 30),
        {(3, 3): (0, 128, 255)},
    ),
    "palette_transparent_png": (
        encode(Image.new("P", (30, 30), 0), "PNG", transparency=0),
        (30, 30),
        {(3, 3): (255, 255, 255)},
    ),
    "grayscale_png": (encode(Image.new("L", (30, 20), 77), "PNG"), (30, 20), {(1, 1): (77,) * 3}),
    "grayscale_alpha_png": (
        encode(Image.new("LA", (30, 20), (77, 255)), "PNG"),
        (30, 20),
        {(1, 1): (77,) * 3},
    ),
    "cmyk_jpeg": (
        encode(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), "JPEG", quality=95),
        (30, 20),
        {(10, 10): (255, 0, 0)},
    ),
    "gray16_png": (
        encode(Image.fromarray(np.full((20, 30), 0x8040, np.uint16)), "PNG"),
        (30, 20),
        {(5, 5): (0x80,) * 3},
    ),
    "rgb16_png": (png_16bit_rgb(30, 20, 0xC010), (30, 20), {(5, 5): (0xC0,) * 3}),
    "exif_rotated_jpeg": (
        _exif_rotated_jpeg(),
        (40, 80),
        {(20, 10): (255, 0, 0), (20, 70): (0, 0, 255)},
    ),
    "webp": (
        encode(Image.new("RGB", (30, 20), (90, 60, 30)), "WEBP", lossless=True),
        (30, 20),
        {(5, 5): (90, 60, 30)},
    ),
    "bmp": (
        encode(Image.new("RGB", (30, 20), (90, 60, 30)), "BMP"),
        (30, 20),
        {(5, 5): (90, 60, 30)},
    ),
    "tiff": (
        encode(Image.new("RGB", (30, 20), (90, 60, 30)), "TIFF"),
        (30, 20),
        {(5, 5): (90, 60, 30)},
    ),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_decode_image_gives_upright_8bit_rgb(case):
    payload, size, colours = MODE_CASES[case]
    image = preprocess.decode_image(payload, min_size=8, max_pixels=10_000)
    assert image.mode == "RGB"
    assert image.size == size
    for (x, y), expected in colours.items():
        np.testing.assert_allclose(image.getpixel((x, y)), expected, atol=4, err_msg=case)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated.jpg", "OSError"),
        ("empty.jpg", "empty"),
        ("text.jpg", "UnidentifiedImageError"),
        ("tiny.png", "min_size"),
        ("bomb.png", "max_pixels"),
    ],
)
def test_bad_files_raise_bad_image_error(tmp_path, name, reason):
    paths = {path.name: path for path in write_bad_files(tmp_path)}
    with pytest.raises(preprocess.BadImageError, match=reason):
        preprocess.decode_image(paths[name].read_bytes(), min_size=16, max_pixels=100_000)


def test_resize_and_crop_centre_and_offsets():
    image = Image.new("RGB", (120, 40), (255, 0, 0))
    image.paste((0, 255, 0), (40, 0, 80, 40))
    image.paste((0, 0, 255), (80, 0, 120, 40))
    centre = preprocess.resize_and_crop(image, 16)
    assert centre.shape == (16, 16, 3) and centre.dtype == np.uint8
    np.testing.assert_array_equal(centre[8, 8], [0, 255, 0])
    np.testing.assert_array_equal(
        preprocess.resize_and_crop(image, 16, crop_offset=0.0)[8, 8], [255, 0, 0]
    )
    np.testing.assert_array_equal(
        preprocess.resize_and_crop(image, 16, crop_offset=1.0)[8, 8], [0, 0, 255]
    )


def test_synthetic_images_are_deterministic_and_smooth():
    first = sources.synthetic_image(3, height=64, width=80)
    np.testing.assert_array_equal(first, sources.synthetic_image(3, height=64, width=80))
    assert first.shape == (64, 80, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, sources.synthetic_image(4, height=64, width=80))
    # Smooth, not noise: neighbouring pixels are mostly close.
    steps = np.abs(np.diff(first.astype(np.int16), axis=1))
    assert np.median(steps) <= 2 and first.std() > 10


# ---------------------------------------------------------------------------------------------
# Config errors.


def test_config_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    cases = {
        "bad data source": "nonsense:abc",
        "needs an integer": "synthetic:many",
        "does not exist": f"folder:{tmp_path / 'missing'}",
        "no images found below": f"folder:{tmp_path / 'empty'}",
    }
    for message, source in cases.items():
        config = default_data_config()
        config.source = source
        with pytest.raises(ValueError, match=message):
            data.make_train_iterator(config, image_size=IMAGE_SIZE, global_batch_size=4, seed=0)
    config = default_data_config()
    config.source = "synthetic:8"
    with pytest.raises(ValueError, match="multiple of process_count"):
        data.make_train_iterator(
            config, image_size=IMAGE_SIZE, global_batch_size=5, seed=0, process_count=2
        )


def test_config_errors_are_user_errors(tmp_path):
    # The entry points print a UserError on one line (no traceback) and exit 2.
    for source in ("nonsense:abc", f"folder:{tmp_path / 'missing'}"):
        config = default_data_config()
        config.source = source
        with pytest.raises(UserError):
            data.make_train_iterator(config, image_size=IMAGE_SIZE, global_batch_size=4, seed=0)
    write_bad_files(tmp_path / "bad")
    with pytest.raises(data.DataError, match="no readable image"):
        data.make_train_iterator(
            folder_config(tmp_path / "bad"), image_size=IMAGE_SIZE, global_batch_size=2, seed=0
        )
    # A bad file is skipped inside the pipeline; were BadImageError to escape, it is a bug.
    assert not issubclass(preprocess.BadImageError, UserError)


def test_folder_source_reads_the_documented_extensions_only(tmp_path):
    # Every training format is one image_io reads; netpbm files stay out of the training set.
    assert set(data.TRAINING_IMAGE_EXTENSIONS) < image_io.IMAGE_EXTENSIONS
    write_colour_folder(tmp_path, 2)
    Image.new("RGB", (48, 40), (1, 2, 3)).save(tmp_path / "extra.ppm")
    Image.new("RGB", (48, 40), (1, 2, 3)).save(tmp_path / "upper.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    source = sources.open_source(f"folder:{tmp_path}")
    assert [source.key(i) for i in range(len(source))] == [
        "group0/image_000.png",
        "group1/image_001.png",
        "upper.JPG",
    ]


def test_only_bad_files_stops_with_error_naming_source(tmp_path):
    write_bad_files(tmp_path / "bad")
    with pytest.raises(ValueError, match=f"no readable image in folder:{tmp_path / 'bad'}"):
        data.make_train_iterator(
            folder_config(tmp_path / "bad"), image_size=IMAGE_SIZE, global_batch_size=2, seed=0
        )


# ---------------------------------------------------------------------------------------------
# The pipeline.


def test_folder_batches_full_despite_bad_files(tmp_path, caplog):
    write_colour_folder(tmp_path / "images", 7)
    bad_paths = write_bad_files(tmp_path / "images" / "bad")
    iterator = data.make_train_iterator(
        folder_config(tmp_path / "images"), image_size=IMAGE_SIZE, global_batch_size=4, seed=1
    )
    # The pipeline logs through absl's logger; an earlier test in the same process may have
    # stopped it propagating to the root logger, so caplog's handler is attached to it directly.
    absl_logger = logging.getLogger("absl")
    absl_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="absl"):
            batches = take(iterator, 6)  # 24 examples: two epochs of 12 records
    finally:
        absl_logger.removeHandler(caplog.handler)
    for batch in batches:
        assert batch.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and batch.dtype == np.uint8
        assert -1 not in identify(batch, 7)
    assert set(sum((identify(batch, 7) for batch in batches), [])) == set(range(7))
    assert iterator.bad_file_count == len(bad_paths)
    logged = caplog.text
    assert "Skipping bad image" in logged
    assert sum(str(path) in logged for path in bad_paths) == len(bad_paths)
    assert "5 bad files skipped" in iterator.bad_file_report()


def test_epochs_cover_every_image_and_reshuffle(tmp_path):
    write_colour_folder(tmp_path, 12)
    iterator = data.make_train_iterator(
        folder_config(tmp_path), image_size=IMAGE_SIZE, global_batch_size=4, seed=5
    )
    order = sum((identify(batch, 12) for batch in take(iterator, 9)), [])
    epochs = [order[0:12], order[12:24], order[24:36]]
    for epoch in epochs:
        assert sorted(epoch) == list(range(12))
    assert epochs[0] != epochs[1] != epochs[2]
    other_seed = data.make_train_iterator(
        folder_config(tmp_path), image_size=IMAGE_SIZE, global_batch_size=4, seed=6
    )
    assert sum((identify(batch, 12) for batch in take(other_seed, 3)), []) != epochs[0]


def test_sample_is_a_deterministic_subset(tmp_path):
    write_colour_folder(tmp_path, 12)

    def first_epoch(seed):
        iterator = data.make_train_iterator(
            folder_config(tmp_path, sample=0.5),
            image_size=IMAGE_SIZE,
            global_batch_size=3,
            seed=seed,
        )
        return sum((identify(batch, 12) for batch in take(iterator, 2)), [])

    subset = first_epoch(0)
    assert len(set(subset)) == 6
    assert first_epoch(0) == subset


@pytest.mark.slow
def test_deterministic_across_worker_counts(tmp_path):
    write_colour_folder(tmp_path / "images", 9)
    write_bad_files(tmp_path / "images" / "bad")
    results = {}
    for worker_count in (0, 1, 2):
        config = folder_config(tmp_path / "images", crop="random", worker_count=worker_count)
        iterator = data.make_train_iterator(
            config, image_size=IMAGE_SIZE, global_batch_size=4, seed=11
        )
        results[worker_count] = np.stack(take(iterator, 5))  # crosses the epoch boundary
        assert iterator.bad_file_count == 5
        iterator.close()
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_random_crop_is_deterministic_and_varies():
    config = default_data_config()
    config.source = "synthetic:6"
    config.crop = "random"
    config.validation_fraction = 0.0

    def batches(seed):
        iterator = data.make_train_iterator(config, image_size=24, global_batch_size=6, seed=seed)
        return np.stack(take(iterator, 3))

    first = batches(0)
    np.testing.assert_array_equal(first, batches(0))
    centre = default_data_config()
    centre.update(source="synthetic:6", validation_fraction=0.0)
    centred = np.stack(
        take(data.make_train_iterator(centre, image_size=24, global_batch_size=6, seed=0), 3)
    )
    assert not np.array_equal(first, centred)


@pytest.mark.parametrize("stop_after", [2, 4])  # mid-epoch, and just past the epoch boundary
def test_save_and_restore_gives_identical_next_batches(tmp_path, stop_after):
    write_colour_folder(tmp_path / "images", 10)
    write_bad_files(tmp_path / "images" / "bad")
    config = folder_config(tmp_path / "images", crop="random")
    make = lambda cfg: data.make_train_iterator(  # noqa: E731
        cfg, image_size=IMAGE_SIZE, global_batch_size=4, seed=3
    )
    reference = make(config)
    expected = take(reference, stop_after + 3)

    interrupted = make(config)
    take(interrupted, stop_after)
    state = json.loads(json.dumps(interrupted.get_state()))
    interrupted.close()

    # Restore into a fresh pipeline, also with a different number of worker processes.
    config.worker_count = 2 if stop_after == 4 else 0
    restored = make(config)
    restored.set_state(state)
    assert restored.bad_file_count == interrupted.bad_file_count
    for want, got in zip(expected[stop_after:], take(restored, 3), strict=True):
        np.testing.assert_array_equal(want, got)
    restored.close()


@pytest.mark.parametrize("process_count", [2, 3])
def test_processes_read_disjoint_parts_of_each_global_batch(tmp_path, process_count):
    write_colour_folder(tmp_path, 12)
    config = folder_config(tmp_path)
    global_batch_size = 6
    single = take(
        data.make_train_iterator(
            config, image_size=IMAGE_SIZE, global_batch_size=global_batch_size, seed=2
        ),
        2,
    )
    per_process = [
        take(
            data.make_train_iterator(
                config,
                image_size=IMAGE_SIZE,
                global_batch_size=global_batch_size,
                seed=2,
                process_index=index,
                process_count=process_count,
            ),
            2,
        )
        for index in range(process_count)
    ]
    seen = []
    for step in range(2):
        parts = [batches[step] for batches in per_process]
        assert all(part.shape[0] == global_batch_size // process_count for part in parts)
        # Together the processes' batches are exactly the global batch.
        interleaved = np.stack(parts, axis=1).reshape(single[step].shape)
        np.testing.assert_array_equal(interleaved, single[step])
        seen += sum((identify(part, 12) for part in parts), [])
    assert sorted(seen) == list(range(12))  # one epoch, each image exactly once


def test_validation_is_held_out_and_deterministic(tmp_path):
    write_colour_folder(tmp_path, 20)
    config = folder_config(tmp_path, validation_fraction=0.1)
    validation = data.load_validation_images(config, image_size=IMAGE_SIZE, count=5, seed=0)
    assert validation.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)  # min(count, the 4 held out)
    np.testing.assert_array_equal(
        validation, data.load_validation_images(config, image_size=IMAGE_SIZE, count=5, seed=0)
    )
    held_out = set(identify(validation, 20))
    # The images whose path hashes below 0.1. Pinned: were it to change, every folder's split
    # (and the batches of every run being resumed) would change with it.
    assert held_out == {4, 5, 6, 18}
    assert len(data.validation_descriptions(config)) == 4
    # With a count, the names of exactly the images validation uses, in its order.
    names = data.validation_descriptions(config, image_size=IMAGE_SIZE, count=3, seed=0)
    assert [int(name[-7:-4]) for name in names] == identify(validation, 20)[:3]
    for seed in (0, 1):  # training never sees them, whatever the seed
        iterator = data.make_train_iterator(
            config, image_size=IMAGE_SIZE, global_batch_size=8, seed=seed
        )
        trained = set(sum((identify(batch, 20) for batch in take(iterator, 2)), []))
        assert trained == set(range(20)) - held_out


def held_out_keys(root: Path, fraction: float) -> set[str]:
    source = sources.open_source(f"folder:{root}")
    return {source.key(int(i)) for i in sources.held_out_indices(source, fraction)}


def test_held_out_files_stay_held_out_when_files_are_added(tmp_path):
    write_colour_folder(tmp_path, 40)
    before = held_out_keys(tmp_path, 0.15)
    old_files = {f"group{i % 3}/image_{i:03d}.png" for i in range(40)}
    assert 1 < len(before) < 40  # chosen by the threshold, not by a fallback
    for added in (40, 100):
        write_colour_folder(tmp_path, 40 + added)  # the first 40 files are rewritten unchanged
        after = held_out_keys(tmp_path, 0.15)
        assert after & old_files == before  # none left validation, none joined it
        assert len(after) > len(before)  # the new files are split too


def test_held_out_fraction_and_tiny_folder_fallbacks(tmp_path):
    large = sources.open_source("synthetic:4000")
    assert 340 < len(sources.held_out_indices(large, 0.1)) < 460  # about 10%: 400 +- 3 sigma
    # No path hashes below 1%: the smallest hash is held out, so validation is never empty.
    write_colour_folder(tmp_path, 2)
    source = sources.open_source(f"folder:{tmp_path}")
    assert len(sources.held_out_indices(source, 0.01)) == 1
    # Every path hashes below 99%: the largest hash is trained on, so training is never empty.
    assert len(sources.held_out_indices(source, 0.99)) == 1


def test_synthetic_source_validation_has_at_least_one_image():
    config = default_data_config()
    config.source = "synthetic:10"
    config.validation_fraction = 0.01
    validation = data.load_validation_images(config, image_size=IMAGE_SIZE, count=4, seed=0)
    assert validation.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


@pytest.mark.skipif(not (SHARED_DATA / "photos").is_dir(), reason="needs ../shared/data/photos")
def test_real_photos():
    config = default_data_config()
    config.source = f"folder:{SHARED_DATA / 'photos'}"
    iterator = data.make_train_iterator(config, image_size=64, global_batch_size=4, seed=0)
    batches = take(iterator, 2)
    for batch in batches:
        assert batch.shape == (4, 64, 64, 3) and batch.dtype == np.uint8
        assert batch.reshape(4, -1).std(axis=1).min() > 5  # real content, not blank
    assert iterator.bad_file_count == 0
    validation = data.load_validation_images(config, image_size=64, count=2, seed=0)
    assert validation.shape == (2, 64, 64, 3)


# ---------------------------------------------------------------------------------------------
# The TensorFlow-free TFDS builder.


COCO_VALIDATION_IMAGES = 8


@pytest.fixture(scope="module")
def coco_zips(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A manual_dir with tiny COCO train2014/val2014 zips, and the train images' bytes by name.

    Validation image i has colour identity_colour(i), so a batch tells which ones it holds.
    """
    originals = {}
    manual_dir = tmp_path_factory.mktemp("coco_manual")
    with zipfile.ZipFile(manual_dir / "train2014.zip", "w") as archive:
        for index in range(4):
            mode = "L" if index == 3 else "RGB"  # COCO has a few greyscale JPEGs
            colour = identity_colour(index)[0] if mode == "L" else identity_colour(index)
            payload = encode(Image.new(mode, (72, 64), colour), "JPEG", quality=95)
            name = f"COCO_train2014_{index:012d}.jpg"
            archive.writestr(f"train2014/{name}", payload)
            originals[name] = payload
        archive.writestr("train2014/README.txt", "not an image")
    with zipfile.ZipFile(manual_dir / "val2014.zip", "w") as archive:
        for index in range(COCO_VALIDATION_IMAGES):
            payload = encode(Image.new("RGB", (64, 80), identity_colour(index)), "JPEG")
            archive.writestr(f"val2014/COCO_val2014_{index:012d}.jpg", payload)
    return manual_dir, originals


def coco_config(tmp_path: Path, manual_dir: Path) -> ml_collections.ConfigDict:
    config = default_data_config()
    config.update(
        source="tfds:fnst_coco_images/2014",
        tfds_data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual_dir),
        download=True,
    )
    return config


def test_coco_builder_prepares_from_manual_dir_without_tensorflow(tmp_path, coco_zips):
    manual_dir, originals = coco_zips
    config = coco_config(tmp_path, manual_dir)
    source, record_ids = data.training_records(config, image_size=IMAGE_SIZE, seed=0)
    assert len(record_ids) == 4
    read_back = {}
    for record_id in record_ids:
        description = source.describe(int(record_id))
        name = description.split("image/filename=")[1].rstrip(")")
        read_back[name] = source.read(int(record_id))
    assert read_back == originals  # every image, bytes unchanged
    assert list((tmp_path / "tfds" / "fnst_coco_images" / "2014" / "1.0.0").glob("*.array_record*"))
    assert "tensorflow" not in sys.modules

    config.download = False  # prepared once; later runs only read
    iterator = data.make_train_iterator(config, image_size=IMAGE_SIZE, global_batch_size=4, seed=0)
    assert next(iterator).shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    validation = data.load_validation_images(config, image_size=IMAGE_SIZE, count=5, seed=0)
    assert validation.shape == (5, IMAGE_SIZE, IMAGE_SIZE, 3)  # 5 of the 8 validation images


def test_listing_validation_names_reads_only_the_images_validation_uses(
    tmp_path, coco_zips, monkeypatch
):
    from tensorflow_datasets.core.data_sources import base

    config = coco_config(tmp_path, coco_zips[0])
    sources.open_source(  # prepares the dataset; from here on only reads are counted
        config.source,
        split="validation",
        data_dir=config.tfds_data_dir,
        manual_dir=config.manual_dir,
        download=True,
    )
    config.download = False
    reads = []
    get_item, get_items = base.BaseDataSource.__getitem__, base.BaseDataSource.__getitems__

    def counted_get_item(self, key):
        reads.append(int(key))
        return get_item(self, key)

    def counted_get_items(self, keys):
        reads.extend(int(key) for key in keys)
        return get_items(self, keys)

    monkeypatch.setattr(base.BaseDataSource, "__getitem__", counted_get_item)
    monkeypatch.setattr(base.BaseDataSource, "__getitems__", counted_get_items)

    names = data.validation_descriptions(config, image_size=IMAGE_SIZE, count=3, seed=0)
    assert 0 < len(reads) <= 3 < COCO_VALIDATION_IMAGES  # one read per name, not the whole split
    assert all("image/filename=COCO_val2014_" in name for name in names)
    # The very images validation uses, in its order.
    validation = data.load_validation_images(config, image_size=IMAGE_SIZE, count=3, seed=0)
    assert [int(name[-17:-5]) for name in names] == identify(validation, COCO_VALIDATION_IMAGES)
