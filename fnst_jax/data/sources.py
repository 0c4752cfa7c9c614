"""Random-access image sources selected by one config string, and their train/validation split.

    folder:PATH       every image file below PATH, recursively, read directly
    synthetic:N       N deterministic procedurally generated images, no files
    tfds:NAME         a TFDS dataset with an `image` feature, read with `tfds.data_source`
                      (e.g. tfds:coco/2014, or tfds:fnst_coco_images/2014, our TF-free builder)

A source is a sequence of raw records: `read(index)` returns encoded image bytes (or, for the
synthetic source, a decoded uint8 RGB array); `describe(index)` names the record in logs and
`read_with_description` gives both with one read (a TFDS name is a feature of the record). Sources
are pickled into grain worker processes, so they hold only paths and open files lazily.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from fnst_jax.errors import UserError

# The files a `folder:` source trains on: image_io.IMAGE_EXTENSIONS without the netpbm formats
# (.ppm .pgm .pbm), on purpose. A folder's file list fixes the training set, the held-out
# split and the batch a checkpoint resumes at, so it keeps the documented list it always had.
TRAINING_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class DataError(UserError, ValueError):
    """A data config or source that cannot be trained on; the message names the source."""


class ImageSource(Protocol):
    """What the pipeline needs from a source."""

    name: str

    def __len__(self) -> int: ...

    def read(self, index: int) -> bytes | np.ndarray: ...

    def describe(self, index: int) -> str: ...

    def read_with_description(self, index: int) -> tuple[bytes | np.ndarray, str]: ...

    def key(self, index: int) -> str: ...


class FolderSource:
    """Every image file below a folder (recursively), in sorted path order."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.name = f"folder:{root}"
        if not self.root.is_dir():
            raise DataError(f"image folder does not exist: {self.root}")
        self.relative_paths = sorted(
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.suffix.lower() in TRAINING_IMAGE_EXTENSIONS and path.is_file()
        )
        if not self.relative_paths:
            raise DataError(
                f"no images found below {self.root} "
                f"(looked for {', '.join(TRAINING_IMAGE_EXTENSIONS)})"
            )

    def __len__(self) -> int:
        return len(self.relative_paths)

    def read(self, index: int) -> bytes:
        return (self.root / self.relative_paths[index]).read_bytes()

    def describe(self, index: int) -> str:
        return str(self.root / self.relative_paths[index])

    def read_with_description(self, index: int) -> tuple[bytes, str]:
        return self.read(index), self.describe(index)

    def key(self, index: int) -> str:
        return self.relative_paths[index]


class SyntheticSource:
    """`count` deterministic images: a smooth two-colour gradient with a few soft shapes."""

    def __init__(self, count: int, *, height: int = 256, width: int = 320):
        if count < 1:
            raise DataError(f"synthetic source needs at least one image, got {count}")
        self.count = count
        self.height = height
        self.width = width
        self.name = f"synthetic:{count}"

    def __len__(self) -> int:
        return self.count

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return synthetic_image(index, height=self.height, width=self.width)

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def read_with_description(self, index: int) -> tuple[np.ndarray, str]:
        return self.read(index), self.describe(index)

    def key(self, index: int) -> str:
        return str(index)


def synthetic_image(index: int, *, height: int, width: int) -> np.ndarray:
    """Image number `index`: uint8 (height, width, 3), the same on every machine."""
    rng = np.random.default_rng([0x5EED, index])
    rows = np.linspace(0.0, 1.0, height)[:, None]
    cols = np.linspace(0.0, 1.0, width)[None, :]
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ramp = np.cos(angle) * cols + np.sin(angle) * rows
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    start, end = rng.uniform(0.0, 255.0, size=(2, 3))
    image = start + ramp[..., None] * (end - start)
    for _ in range(rng.integers(2, 6)):
        centre_y, centre_x = rng.uniform(0.1, 0.9, size=2)
        radius = rng.uniform(0.08, 0.3)
        colour = rng.uniform(0.0, 255.0, size=3)
        if rng.random() < 0.5:  # disc
            distance = np.hypot(rows - centre_y, (cols - centre_x) * width / height)
        else:  # axis-aligned square
            distance = np.maximum(abs(rows - centre_y), abs(cols - centre_x) * width / height)
        # A soft edge, a few pixels wide, keeps the image smooth rather than aliased.
        weight = np.clip((radius - distance) * height / 3.0, 0.0, 1.0)[..., None]
        image = image * (1.0 - weight) + colour * weight
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class TfdsSource:
    """One split of a prepared TFDS dataset, read with `tfds.data_source` (no TensorFlow)."""

    def __init__(
        self,
        dataset_name: str,
        split: str,
        *,
        data_dir: str | None = None,
        manual_dir: str | None = None,
        download: bool = False,
    ):
        self.dataset_name = dataset_name
        self.split = split
        self.data_dir = data_dir
        self.manual_dir = manual_dir
        self.name = f"tfds:{dataset_name}[{split}]"
        self._data_source = None
        self._open(download=download)

    def _open(self, download: bool = False):
        if self._data_source is None:
            import tensorflow_datasets as tfds

            from fnst_jax.data import coco_builder  # noqa: F401  (registers fnst_coco_images)

            download_config = tfds.download.DownloadConfig(manual_dir=self.manual_dir)
            self._data_source = tfds.data_source(
                self.dataset_name,
                split=self.split,
                data_dir=self.data_dir,
                download=download,
                # Random access needs ArrayRecord; TFDS only defaults to it without a data_dir.
                builder_kwargs={"file_format": "array_record"},
                # We decode ourselves: bad files are skipped, JPEGs decoded at reduced scale.
                decoders={"image": tfds.decode.SkipDecoding()},
                download_and_prepare_kwargs={"download_config": download_config},
            )
        return self._data_source

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data_source"] = None  # reopened lazily in each worker process
        return state

    def __len__(self) -> int:
        return len(self._open())

    def read(self, index: int) -> bytes | np.ndarray:
        return self._open()[index]["image"]

    def describe(self, index: int) -> str:
        try:
            record = self._open()[index]
        except Exception:  # noqa: BLE001  (describing must never fail)
            return f"{self.name}[{index}]"
        return self._description(index, record)

    def read_with_description(self, index: int) -> tuple[bytes | np.ndarray, str]:
        record = self._open()[index]  # one read: the name is a feature of the same record
        return record["image"], self._description(index, record)

    def _description(self, index: int, record: dict) -> str:
        description = f"{self.name}[{index}]"
        for feature in ("image/filename", "image/id"):
            if feature in record:
                value = record[feature]
                value = value.decode() if isinstance(value, bytes) else value
                return f"{description} ({feature}={value})"
        return description

    def key(self, index: int) -> str:
        return f"{self.split}/{index}"


def open_source(
    source: str,
    *,
    split: str = "train",
    image_size: int = 256,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    download: bool = False,
) -> ImageSource:
    """Parses a source string (`folder:PATH`, `synthetic:N`, `tfds:NAME`) and opens it.

    `split` only matters for TFDS; `image_size` sets the synthetic images' native size.
    """
    kind, _, argument = source.partition(":")
    if kind == "folder" and argument:
        return FolderSource(argument)
    if kind == "synthetic" and argument:
        try:
            count = int(argument)
        except ValueError:
            raise DataError(f"synthetic:N needs an integer N, got {source!r}") from None
        # Slightly larger than the crop and not square, so resize and crop really run.
        return SyntheticSource(
            count, height=image_size + image_size // 8, width=image_size * 5 // 4
        )
    if kind == "tfds" and argument:
        return TfdsSource(
            argument, split, data_dir=data_dir, manual_dir=manual_dir, download=download
        )
    raise DataError(
        f"bad data source {source!r}: expected 'folder:PATH', 'synthetic:N' or 'tfds:NAME' "
        "(e.g. 'tfds:coco/2014' or 'tfds:fnst_coco_images/2014')"
    )


def _key_hash(key: str) -> int:
    """A 64-bit hash of a record key, the same on every machine and Python version."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def held_out_indices(source: ImageSource, fraction: float) -> np.ndarray:
    """The records held out for validation: a fixed set that does not depend on any seed.

    A record is held out when the hash of its key (a relative path for folders), read as a
    number in [0, 1), is below `fraction`. Each record's side depends on its own key alone, so
    adding or removing other files never moves a record between training and validation; about
    `fraction` of the records are held out (the exact count depends on the hashes).

    Two fallbacks keep both sides non-empty when `fraction` > 0, and they alone can change as
    files are added: when no key hashes below `fraction` (a tiny folder or fraction), the record
    with the smallest hash is held out, and trains again once some record falls below; when every
    key does, the record with the largest hash is trained on.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {fraction}")
    count = len(source)
    if fraction == 0.0:
        return np.zeros((0,), np.int64)
    if count < 2:
        raise DataError(
            f"{source.name} has {count} image(s): too few to hold out a validation image "
            "(set validation_fraction=0.0)"
        )
    hashes = [_key_hash(source.key(i)) for i in range(count)]
    # Python compares an int and a float exactly, and fraction * 2**64 is exact in floating point.
    held_out = [i for i, value in enumerate(hashes) if value < fraction * 2**64]
    if not held_out:
        held_out = [min(range(count), key=hashes.__getitem__)]
    elif len(held_out) == count:
        held_out.remove(max(range(count), key=hashes.__getitem__))
    return np.array(held_out, np.int64)


def sample_indices(indices: Sequence[int] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A deterministic subset (by seed) of `fraction` of `indices`, at least one, in order."""
    indices = np.asarray(indices, np.int64)
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"sample must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return indices
    keep = max(1, round(fraction * len(indices)))
    chosen = np.random.default_rng([seed, 0x5A3]).permutation(len(indices))[:keep]
    return indices[np.sort(chosen)]
