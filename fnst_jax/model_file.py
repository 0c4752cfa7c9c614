"""The model file: one self-contained `.npz` holding a trained TransformerNet. No JAX here.

Layout: one float32 array per TransformerNet parameter, keyed by its path
(`conv1/conv/conv/kernel`, ...: `param_name`), plus `__fnst_meta__` (`META_KEY`), a UTF-8
JSON document stored as a uint8 array, holding the format tag and version and whatever the
trainer records. Nothing is pickled: the file is read with `allow_pickle=False`.

The metadata training records (`export.model_metadata`):
  format, version    "fnst_jax.model", 1
  pad                the reflection pad (px) the model was trained with
  image_size         the training crop size (px)
  style_image        absolute path of the style image; style_size: its resize (shorter side)
  native_size        the style images' mean longest side as trained (px): the image size at
                     which the model paints the style in the style's own proportions, what
                     the stroke scale "auto" runs the network at (`fnst_jax.stroke`).
                     Optional: models exported before it existed have none.
  style_thumbnail    the style image as a base64-encoded JPEG whose longest side is at most
                     `THUMBNAIL_SIZE` px (for a page to show; `style_thumbnail_jpeg` decodes
                     it). Optional: models exported before it existed have none.
  styles             the model's styles in order, each {"name" (the file's stem), "image"
                     (absolute path), "thumbnail" (as style_thumbnail)}; a multi-style model
                     (conditional instance norm) has several. style_image and style_thumbnail
                     are the first's. Optional: older models have none (`style_names`).
  loss               the loss layers and (balanced) weights (`losses.LossSpec` as a dict)
  vgg                {"weights", "preprocessing"} of the loss network
  step               the training step the parameters are from
  config             the whole training config
  validation         the validation figures of these parameters, when validation ran at
                     `step`: the loss terms (`total`, `content`, ...) and the quality figures
                     (`fnst_jax.quality`), means over the validation images. Optional.
  selected_by        best.npz only: how it was chosen (`checkpoint.BEST_SELECTION`)

Training writes WORKDIR/model.npz (`MODEL_FILENAME`) at every checkpoint and WORKDIR/best.npz
(`BEST_FILENAME`) whenever a validation finds the best parameters so far. This module reads
and writes the file as numpy arrays and JSON (`read_model`, `read_metadata`, `write_model`),
names what a model holds (`style_names`, `model_name`) and decodes its thumbnail; building a
TransformerNet from it is `export.load_model`'s (JAX). Reading a model's metadata, styles or
thumbnail therefore loads no JAX: the ONNX engine, the stylize command line and checkpoint
bookkeeping use it as it is.

A model's style input (`style_weights`: one weight per style, a one-hot row for one style) is
defined here too, beside the style names it indexes: the JAX and ONNX engines, the exporter and
the network itself take it in this form.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fnst_jax import image_io
from fnst_jax.errors import UserError
from fnst_jax.files import write_atomic

FORMAT = "fnst_jax.model"
VERSION = 1
META_KEY = "__fnst_meta__"
MODEL_FILENAME = "model.npz"
BEST_FILENAME = "best.npz"  # the best validated model of a run, beside model.npz
STYLE_THUMBNAIL_KEY = "style_thumbnail"
THUMBNAIL_SIZE = 128  # px, the longest side at most
THUMBNAIL_QUALITY = 85  # JPEG: 5-10 KB at 128 px, 7-14 KB of base64 in the metadata


class ModelFileError(UserError, ValueError):
    """A model file that is missing, unreadable, or not an fnst_jax model."""


class StyleError(UserError, ValueError):
    """A style input that does not fit the model (wrong length, negative, all zero)."""


def param_name(path: tuple) -> str:
    """A parameter's key in the file from its path in the parameter tree (pytree keys or
    plain names): `conv1/conv/conv/kernel`."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def write_model(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]
) -> Path:
    """Write flat parameters (`param_name` keys) and metadata as a model file, atomically
    (`files.write_atomic`: a crash leaves the old file). The format tag and version are
    added to the metadata; the arrays are stored as float32."""
    meta = {"format": FORMAT, "version": VERSION, **metadata}
    stored = {name: np.asarray(value).astype(np.float32) for name, value in arrays.items()}
    stored[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **stored)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write)


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A model file, or a folder (training workdir) holding `model.npz`."""
    path = Path(path)
    if path.is_dir():
        candidate = path / MODEL_FILENAME
        if not candidate.is_file():
            raise ModelFileError(
                f"{path}: folder has neither an exported model ({MODEL_FILENAME}) nor "
                "training checkpoints"
            )
        return candidate
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    return path


def read_model(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and validate a model file (or a workdir's model.npz): (flat params, metadata)."""
    path = resolve_model_path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ModelFileError(f"{path}: not an fnst_jax model file ({e})") from e
    if META_KEY not in arrays:
        raise ModelFileError(f"{path}: not an fnst_jax model file (no {META_KEY} entry)")
    return arrays, _decode_metadata(path, arrays.pop(META_KEY))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The validated metadata of a model file, without reading its parameters."""
    path = resolve_model_path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            encoded = data[META_KEY] if META_KEY in data.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ModelFileError(f"{path}: not an fnst_jax model file ({e})") from e
    if encoded is None:
        raise ModelFileError(f"{path}: not an fnst_jax model file (no {META_KEY} entry)")
    return _decode_metadata(path, encoded)


def is_model_file(path: str | os.PathLike) -> bool:
    """An `.npz` holding fnst_jax model metadata (reads the archive's index only)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return META_KEY in data.files
    except (OSError, ValueError, EOFError):
        return False


def _decode_metadata(path: Path, encoded: np.ndarray) -> dict[str, Any]:
    """The `META_KEY` array -> the metadata, checked to be this format in a version this
    fnst_jax reads."""
    try:
        meta = json.loads(encoded.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: corrupt model metadata ({e})") from e
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an fnst_jax model file (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise ModelFileError(
            f"{path}: model format version {meta['version']} is newer than this fnst_jax "
            f"supports ({VERSION}); upgrade fnst_jax"
        )
    return meta


def model_name(path: str | os.PathLike) -> str:
    """What a model goes by in output names and served names: a workdir's name (for the
    folder or its model.npz), the workdir's name plus `-best` for its best.npz, else the
    file's stem. Empty only for a model at the file system's root."""
    path = Path(path)
    if path.is_dir() or path.name == MODEL_FILENAME:
        return (path if path.is_dir() else path.parent).resolve().name
    if path.name == BEST_FILENAME:
        return f"{path.parent.resolve().name}-best"
    return path.stem


def style_name(image_path: str | os.PathLike) -> str:
    """A style's name: its image file's stem (`candy.jpg` -> candy)."""
    return Path(image_path).stem


def style_names(metadata: dict[str, Any], num_styles: int = 1) -> list[str]:
    """The names of a model's styles, in order: from `styles`; for models written before it
    existed, the style image's stem (or "style")."""
    names = [style["name"] for style in metadata.get("styles") or ()]
    if names:
        return names
    image = metadata.get("style_image")
    return (
        [style_name(image) if image else "style"]
        if num_styles == 1
        else [f"style{i}" for i in range(num_styles)]
    )


def make_style_thumbnail(style_rgb: np.ndarray) -> str:
    """A uint8 RGB style image -> the `style_thumbnail` entry: a base64-encoded JPEG, shrunk
    (never enlarged) so that its longest side is at most THUMBNAIL_SIZE px."""
    image = Image.fromarray(np.asarray(style_rgb, np.uint8), "RGB")
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image_io.encode_image(buffer, np.asarray(image), format="jpg", quality=THUMBNAIL_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def style_thumbnail_jpeg(metadata: dict[str, Any]) -> bytes | None:
    """The JPEG bytes of a model's style thumbnail; None for a model exported without one
    (or with an unreadable one: it is only a picture)."""
    encoded = metadata.get(STYLE_THUMBNAIL_KEY)
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def style_weights(
    num_styles: int, selection: int | Sequence[float] | np.ndarray, batch: int = 1
) -> np.ndarray:
    """The style input for `batch` images: a style index (one-hot) or one weight per style,
    normalised to sum to 1 -> float32 (batch, num_styles). Raises StyleError for an index
    out of range, a wrong length, negative weights or weights that sum to zero."""
    if isinstance(selection, (int, np.integer)):
        if not 0 <= selection < num_styles:
            raise StyleError(
                f"style index {selection} is out of range: the model has "
                f"{num_styles} style{'s' if num_styles != 1 else ''}"
            )
        weights = np.zeros(num_styles, np.float32)
        weights[selection] = 1.0
    else:
        weights = np.asarray(selection, np.float64).reshape(-1)
        if weights.size != num_styles:
            raise StyleError(f"{weights.size} style weights for a {num_styles}-style model")
        if np.any(weights < 0) or not np.all(np.isfinite(weights)) or weights.sum() <= 0:
            raise StyleError(f"style weights must be >= 0 with a positive sum, got {list(weights)}")
        weights = (weights / weights.sum()).astype(np.float32)
    return np.broadcast_to(weights, (batch, num_styles)).copy()
