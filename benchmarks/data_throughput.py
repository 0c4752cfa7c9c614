r"""Images per second of the input pipeline alone (decode, resize, crop, batch; no model).

Measures two sources:
  * folder: the photos in ../shared/data/photos (481x321 JPEGs), read from files;
  * ArrayRecord: a COCO-like `fnst_coco_images/2014` prepared from 640x480 JPEGs (made from the
    same photos, or synthetic images without them) by this package's TF-free TFDS builder.

    python benchmarks/data_throughput.py                       # defaults: 256 px, batch 16
    python benchmarks/data_throughput.py --read_threads=1,2 --worker_counts=0,2

With worker_count=0 the script also prints images per CPU-second of the process: the
throughput per core, which stays meaningful on a machine shared with other work.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image

from fnst_jax import data
from fnst_jax.data import sources

# configs/ is not an installed package: import it from the checkout this script belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from configs import default  # noqa: E402

_PHOTOS = flags.DEFINE_string(
    "photos",
    str(Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"),
    "Folder of photos for the folder source (and to make the ArrayRecord images from).",
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Crop size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per configuration.")
_RECORDS = flags.DEFINE_integer("records", 320, "Images in the prepared ArrayRecord dataset.")
_WORKER_COUNTS = flags.DEFINE_list("worker_counts", ["0"], "grain worker processes to try.")
_READ_THREADS = flags.DEFINE_list("read_threads", ["1", "2"], "Decoding threads to try.")


def coco_like_jpegs(photos: Path, count: int) -> list[bytes]:
    """`count` 640x480 JPEGs (COCO's typical size), from the photos if present."""
    if photos.is_dir():
        images = [Image.open(path).convert("RGB") for path in sorted(photos.glob("*.jpg"))]
    else:
        images = [
            Image.fromarray(sources.synthetic_image(i, height=480, width=640)) for i in range(8)
        ]
    encoded = []
    for index in range(count):
        image = images[index % len(images)].resize((640, 480), Image.Resampling.BICUBIC)
        if index % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def prepare_array_record(workdir: Path, photos: Path, count: int) -> ml_collections.ConfigDict:
    manual_dir = workdir / "manual"
    manual_dir.mkdir()
    jpegs = coco_like_jpegs(photos, count)
    for folder, chosen in (("train2014", jpegs), ("val2014", jpegs[:4])):
        with zipfile.ZipFile(manual_dir / f"{folder}.zip", "w") as archive:
            for index, payload in enumerate(chosen):
                archive.writestr(f"{folder}/COCO_{folder}_{index:012d}.jpg", payload)
    config = default.get_config().data
    config.update(
        source="tfds:fnst_coco_images/2014",
        tfds_data_dir=str(workdir / "tfds"),
        manual_dir=str(manual_dir),
        download=True,
    )
    data.training_records(config, image_size=_IMAGE_SIZE.value, seed=0)  # prepares once
    config.download = False
    return config


def images_per_second(
    config: ml_collections.ConfigDict, *, worker_count: int, read_threads: int
) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process).

    The second figure is per core and robust to other load on the machine; it only counts this
    process, so it is meaningful for worker_count=0 (workers burn CPU in other processes).
    """
    config = config.copy_and_resolve_references()
    config.worker_count = worker_count
    config.read_threads = read_threads
    iterator = data.make_train_iterator(
        config, image_size=_IMAGE_SIZE.value, global_batch_size=_BATCH_SIZE.value, seed=0
    )
    next(iterator)  # start-up (worker processes) is not throughput
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(_BATCHES.value):
        batch = next(iterator)
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    iterator.close()
    assert batch.dtype == np.uint8
    images = _BATCHES.value * _BATCH_SIZE.value
    return images / elapsed, images / elapsed_cpu


def main(argv: Sequence[str]) -> None:
    del argv
    photos = Path(_PHOTOS.value)
    configs = {}
    if photos.is_dir():
        folder = default.get_config().data
        folder.source = f"folder:{photos}"
        configs[f"folder ({photos.name}, 481x321 JPEG)"] = folder
    else:
        print(f"{photos} not found: skipping the folder source")
    with tempfile.TemporaryDirectory() as workdir:
        configs[f"ArrayRecord (fnst_coco_images, {_RECORDS.value} x 640x480 JPEG)"] = (
            prepare_array_record(Path(workdir), photos, _RECORDS.value)
        )
        print(f"image_size={_IMAGE_SIZE.value} batch_size={_BATCH_SIZE.value}")
        for name, config in configs.items():
            for worker_count in map(int, _WORKER_COUNTS.value):
                for read_threads in map(int, _READ_THREADS.value):
                    rate, rate_per_cpu = images_per_second(
                        config, worker_count=worker_count, read_threads=read_threads
                    )
                    per_cpu = f"{rate_per_cpu:7.1f} images/CPU-s" if worker_count == 0 else ""
                    print(
                        f"{name:55s} workers={worker_count} threads={read_threads}: "
                        f"{rate:7.1f} images/s {per_cpu}"
                    )


if __name__ == "__main__":
    app.run(main)
