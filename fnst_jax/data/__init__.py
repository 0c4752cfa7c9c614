"""Content images for training: sources, preprocessing and the grain pipeline.

One config string selects the source (`config.data.source`):

* `tfds:fnst_coco_images/2014`: COCO 2014 images prepared once by this package's TF-free TFDS
  builder (`fnst_jax.data.coco_builder`), then read with `tfds.data_source`.
* `tfds:coco/2014` (or any TFDS dataset with an `image` feature): the official builders; preparing
  `coco` needs TensorFlow (`pip install fnst_jax[coco]`) and the ArrayRecord file format.
* `folder:PATH`: every image below PATH, read directly.
* `synthetic:N`: N deterministic generated images, for smoke runs and tests.

The other fields of `config.data` are written out, with their meaning, in configs/default.py.
A config or source that cannot be trained on raises `DataError` (a `UserError`).
"""

from fnst_jax.data.pipeline import (
    TrainIterator,
    load_validation_images,
    make_train_iterator,
    training_records,
    validation_descriptions,
    validation_records,
)
from fnst_jax.data.preprocess import BadImageError
from fnst_jax.data.sources import TRAINING_IMAGE_EXTENSIONS, DataError, open_source

__all__ = [
    "TRAINING_IMAGE_EXTENSIONS",
    "BadImageError",
    "DataError",
    "TrainIterator",
    "load_validation_images",
    "make_train_iterator",
    "open_source",
    "training_records",
    "validation_descriptions",
    "validation_records",
]
