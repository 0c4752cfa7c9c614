"""The grain input pipeline: source -> per-epoch shuffle -> decode/crop -> per-process batches.

Every function takes `data_config`, the `config.data` block written out in configs/default.py;
its fields are read as they are, with no second set of defaults here.

Every batch is a pure function of (config, seed, batch index), which gives the guarantees the
training loop relies on:

* Deterministic on any number of worker processes: the pipeline is a grain `MapDataset` up to
  and including batching, so workers only prefetch whole batches and never change their content.
* Resumable: the iterator state is just the next batch index (plus the bad records seen so far,
  for reporting), so restoring rebuilds the pipeline at that index.
* Full batches despite bad files: a record that fails to decode is replaced by the next good
  record in the shuffled stream (crossing into the next epoch if needed). The choice depends only
  on the data, so it is the same in every worker and after every restore.
* Multi-host: the stream of examples is strided over processes before batching, so process `i`
  of `n` reads examples `i, i+n, i+2n, ...` of each global batch: a disjoint 1/n of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags, logging

from fnst_jax.data import preprocess, sources

# How many bad files are logged one by one before switching to periodic counts.
_BAD_FILES_LOGGED_BY_NAME = 5


def _ensure_absl_flags_parsed() -> None:
    # grain reads its own absl flags, also in its threads and worker processes. Under pytest or a
    # script that does not use absl.app, nothing has parsed them; defaults are what we want.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _is_tfds(data_config: ml_collections.ConfigDict) -> bool:
    return data_config.source.startswith("tfds:")


def _open(data_config: ml_collections.ConfigDict, *, split: str, image_size: int):
    return sources.open_source(
        data_config.source,
        split=split,
        image_size=image_size,
        data_dir=data_config.tfds_data_dir,
        manual_dir=data_config.manual_dir,
        download=bool(data_config.download),
    )


def _uses_held_out_fraction(data_config: ml_collections.ConfigDict) -> bool:
    return not _is_tfds(data_config) or not data_config.validation_split


def training_records(
    data_config: ml_collections.ConfigDict, *, image_size: int, seed: int
) -> tuple[sources.ImageSource, np.ndarray]:
    """The training source and the record indices used for training (held-out and sample out)."""
    source = _open(data_config, split=data_config.train_split, image_size=image_size)
    record_ids = np.arange(len(source), dtype=np.int64)
    if _uses_held_out_fraction(data_config):
        held_out = sources.held_out_indices(source, data_config.validation_fraction)
        record_ids = np.setdiff1d(record_ids, held_out)
    return source, sources.sample_indices(record_ids, data_config.sample, seed)


def validation_records(
    data_config: ml_collections.ConfigDict, *, image_size: int
) -> tuple[sources.ImageSource, np.ndarray]:
    """The validation source and its record indices (never used for training)."""
    if _uses_held_out_fraction(data_config):
        source = _open(data_config, split=data_config.train_split, image_size=image_size)
        return source, sources.held_out_indices(source, data_config.validation_fraction)
    source = _open(data_config, split=data_config.validation_split, image_size=image_size)
    return source, np.arange(len(source), dtype=np.int64)


class _LoadExample:
    """Position in the shuffled stream -> cropped uint8 image, replacing bad records.

    Called by grain as `map_with_index(position, record_id)`; picklable into worker processes.
    """

    def __init__(
        self,
        source: sources.ImageSource,
        records: grain.MapDataset,
        *,
        epoch_length: int,
        seed: int,
        image_size: int,
        crop: str,
        min_size: int,
        max_pixels: int,
    ):
        self.source = source
        self.records = records
        self.epoch_length = epoch_length
        self.seed = seed
        self.image_size = image_size
        self.crop = crop
        self.min_size = min_size
        self.max_pixels = max_pixels
        self._known_bad: dict[int, str] = {}  # per-process cache; results never depend on it

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_known_bad"] = {}
        return state

    def _crop_offset(self, position: int) -> float:
        if self.crop == "center":
            return 0.5
        # Keyed by the stream position, which encodes both the epoch and the index in it.
        return float(np.random.default_rng([self.seed, position]).random())

    def __call__(self, position: int, record_id: Any) -> dict[str, Any]:
        skipped = []
        record_id = int(record_id)
        # Try the record at this position, then the following ones. Two epochs' worth of
        # positions are sure to include a whole epoch, so every record, even across a boundary.
        for lookahead in range(2 * self.epoch_length):
            if lookahead:
                record_id = int(self.records[position + lookahead])
            reason = self._known_bad.get(record_id)
            if reason is None:
                try:
                    image = preprocess.preprocess_example(
                        self.source.read(record_id),
                        image_size=self.image_size,
                        min_size=self.min_size,
                        max_pixels=self.max_pixels,
                        crop_offset=self._crop_offset(position),
                    )
                    return {"image": image, "skipped": skipped}
                except (preprocess.BadImageError, OSError) as error:
                    reason = str(error)
                    self._known_bad[record_id] = reason
            skipped.append((record_id, reason))
        raise sources.DataError(
            f"no readable image in {self.source.name}: all {self.epoch_length} training images "
            f"were skipped (e.g. {self.source.describe(skipped[0][0])}: {skipped[0][1]})"
        )


def _collate(examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": np.stack([example["image"] for example in examples]),
        "skipped": [item for example in examples for item in example["skipped"]],
    }


class TrainIterator:
    """Infinite iterator of uint8 NHWC batches with a JSON-serialisable, exact resume state."""

    def __init__(
        self,
        batches: grain.MapDataset,
        *,
        source: sources.ImageSource,
        worker_count: int,
        read_threads: int,
    ):
        self._batches = batches
        self._source = source
        self._worker_count = worker_count
        self._read_threads = read_threads
        self._next_batch = 0
        self._bad_records: dict[int, str] = {}
        self._grain_iterator = None

    def _start(self):
        _ensure_absl_flags_parsed()
        dataset = self._batches.slice(slice(self._next_batch, None)).to_iter_dataset(
            grain.ReadOptions(num_threads=self._read_threads, prefetch_buffer_size=2)
        )
        if self._worker_count > 0:
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self._worker_count)
            )
        return iter(dataset)

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> np.ndarray:
        if self._grain_iterator is None:
            self._grain_iterator = self._start()
        batch = next(self._grain_iterator)
        self._next_batch += 1
        for record_id, reason in batch["skipped"]:
            self._note_bad_record(int(record_id), reason)
        images = batch["image"]
        if self._worker_count > 0:
            # Batches from workers live in shared memory owned by grain; a plain copy (3 MB for
            # 16 images at 256 px) frees that memory at once and hands the caller a normal array.
            images = np.array(images, copy=True, subok=False)
        return images

    def _note_bad_record(self, record_id: int, reason: str) -> None:
        if record_id in self._bad_records:
            return
        self._bad_records[record_id] = reason
        count = len(self._bad_records)
        if count <= _BAD_FILES_LOGGED_BY_NAME:
            logging.warning(
                "Skipping bad image %s: %s (%d skipped so far)",
                self._source.describe(record_id),
                reason,
                count,
            )
        elif count in (10, 100, 1000) or count % 10_000 == 0:
            logging.warning("%d bad images skipped so far in %s", count, self._source.name)

    @property
    def bad_file_count(self) -> int:
        """Distinct bad files skipped so far (across restores)."""
        return len(self._bad_records)

    def bad_file_report(self, limit: int = _BAD_FILES_LOGGED_BY_NAME) -> str:
        """'N bad files skipped, e.g. PATH (reason), ...' for logs."""
        examples = [
            f"{self._source.describe(record_id)} ({reason})"
            for record_id, reason in list(self._bad_records.items())[:limit]
        ]
        return f"{self.bad_file_count} bad files skipped in {self._source.name}" + (
            ": " + "; ".join(examples) if examples else ""
        )

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable; `set_state` on an identically built iterator resumes exactly."""
        return {
            "next_batch": self._next_batch,
            "bad_records": [[record_id, reason] for record_id, reason in self._bad_records.items()],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.close()
        self._next_batch = int(state["next_batch"])
        self._bad_records = {int(record_id): reason for record_id, reason in state["bad_records"]}

    def close(self) -> None:
        """Stops worker processes (also done on garbage collection)."""
        if self._grain_iterator is not None:
            close = getattr(self._grain_iterator, "close", None)
            if close is not None:
                close()
            self._grain_iterator = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass


def make_train_iterator(
    data_config: ml_collections.ConfigDict,
    *,
    image_size: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> TrainIterator:
    """Infinite training batches for this process: uint8 (global_batch_size // process_count,
    image_size, image_size, 3), reshuffled every epoch, identical for a given seed and config.
    """
    if global_batch_size < 1 or global_batch_size % process_count:
        raise sources.DataError(
            f"global_batch_size={global_batch_size} must be a positive multiple of "
            f"process_count={process_count}"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    _ensure_absl_flags_parsed()
    seed = int(seed) % 2**32  # grain's shuffle takes 32-bit seeds
    if data_config.crop not in ("center", "random"):
        raise sources.DataError(f"crop must be 'center' or 'random', got {data_config.crop!r}")
    source, record_ids = training_records(data_config, image_size=image_size, seed=seed)
    # Shuffled order of the records, one epoch after another, reshuffled per epoch by grain.
    records = grain.MapDataset.source(record_ids).shuffle(seed=seed).repeat()
    load_example = _LoadExample(
        source,
        records,
        epoch_length=len(record_ids),
        seed=seed,
        image_size=image_size,
        crop=data_config.crop,
        min_size=data_config.min_size,
        max_pixels=data_config.max_pixels,
    )
    # Fail now, in this process, with a clear message if nothing at all is readable.
    load_example(0, records[0])
    examples = records.map_with_index(load_example)
    batches = examples.slice(slice(process_index, None, process_count)).batch(
        global_batch_size // process_count, drop_remainder=True, batch_fn=_collate
    )
    logging.info(
        "Training data: %s, %d images (%d per process batch, %d worker processes)",
        source.name,
        len(record_ids),
        global_batch_size // process_count,
        data_config.worker_count,
    )
    return TrainIterator(
        batches,
        source=source,
        worker_count=data_config.worker_count,
        read_threads=data_config.read_threads,
    )


def _validation_set(
    data_config: ml_collections.ConfigDict, *, image_size: int, count: int, seed: int
) -> tuple[list[np.ndarray], list[str]]:
    """The validation images and their names; reads only the records it returns (and any bad
    ones it skips on the way), in an order fixed by `seed`."""
    source, record_ids = validation_records(data_config, image_size=image_size)
    order = np.random.default_rng([seed, 0x7A1]).permutation(record_ids)
    images, names, bad = [], [], []
    for record_id in order:
        if len(images) == count:
            break
        try:
            raw, name = source.read_with_description(int(record_id))
            images.append(
                preprocess.preprocess_example(
                    raw,
                    image_size=image_size,
                    min_size=data_config.min_size,
                    max_pixels=data_config.max_pixels,
                )
            )
            names.append(name)
        except (preprocess.BadImageError, OSError) as error:
            bad.append(f"{source.describe(int(record_id))} ({error})")
    if bad:
        logging.warning(
            "Skipped %d bad validation images in %s, e.g. %s",
            len(bad),
            source.name,
            "; ".join(bad[:_BAD_FILES_LOGGED_BY_NAME]),
        )
    if not images and len(order) and count > 0:
        raise sources.DataError(f"no readable validation image in {source.name}: {bad[0]}")
    return images, names


def load_validation_images(
    data_config: ml_collections.ConfigDict, *, image_size: int, count: int, seed: int
) -> np.ndarray:
    """Up to `count` centre-cropped held-out images, uint8 (n, image_size, image_size, 3).

    The selection is fixed by `seed`; bad files are skipped (and logged) and replaced by further
    validation images, so n = min(count, number of validation images) unless files are bad.
    """
    images, _ = _validation_set(data_config, image_size=image_size, count=count, seed=seed)
    return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)


def validation_descriptions(
    data_config: ml_collections.ConfigDict,
    *,
    image_size: int = 256,
    count: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Paths (or TFDS record names) of validation images, e.g. to check they are held out.

    With `count`, the names of exactly the images `load_validation_images` returns for the same
    `count` and `seed`, in its order; only those records are read (a TFDS validation split is not
    listed whole). Without, every validation image in record order: free for folder and synthetic
    sources, but a TFDS split is read record by record to name them (the 40,504 of COCO val2014).
    """
    if count is not None:
        return _validation_set(data_config, image_size=image_size, count=count, seed=seed)[1]
    source, record_ids = validation_records(data_config, image_size=image_size)
    return [source.describe(int(record_id)) for record_id in record_ids]
