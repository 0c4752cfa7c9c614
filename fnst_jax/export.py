"""The exported model: one self-contained `.npz` file that `stylize.py` loads.

Layout: one float32 array per TransformerNet parameter, keyed by its path
(`conv1/conv/conv/kernel`, ...), plus `__fnst_meta__`, a UTF-8 JSON document stored as a
uint8 array, holding the format tag and version and whatever the trainer records. Nothing is
pickled: the file is read with `allow_pickle=False`.

The metadata training records (`model_metadata`):
  format, version    "fnst_jax.model", 1
  pad                the reflection pad (px) the model was trained with
  image_size         the training crop size (px)
  style_image        absolute path of the style image; style_size: its resize (shorter side)
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

Training writes WORKDIR/model.npz with `export_model` at every checkpoint (metadata from
`model_metadata`), and WORKDIR/best.npz (`BEST_FILENAME`) whenever a validation finds the
best parameters so far (`checkpoint.BestModel`); `stylize.py` and `evaluate` read either
with `load_model` (a workdir means its model.npz; best.npz is given by its path).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from fnst_jax import image_io
from fnst_jax.errors import UserError
from fnst_jax.files import write_atomic
from fnst_jax.losses import LossSpec
from fnst_jax.stylize.styles import StyleError
from fnst_jax.transformer_net import TransformerNet, num_styles_of

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


def param_name(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """A nested parameter dict -> {"conv1/conv/conv/kernel": array, ...}."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {param_name(path): np.asarray(v) for path, v in leaves}


def flat_params(model: TransformerNet) -> dict[str, np.ndarray]:
    return flatten_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def save_model(path: str | os.PathLike, model: TransformerNet, metadata: dict[str, Any]) -> Path:
    """Write the model atomically (`files.write_atomic`: a crash leaves the old file)."""
    meta = {"format": FORMAT, "version": VERSION, **metadata}
    arrays = {k: v.astype(np.float32) for k, v in flat_params(model).items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write)


def model_metadata(
    config: ml_collections.ConfigDict,
    spec: LossSpec,
    vgg_preprocessing: str,
    step: int,
    styles: list[dict[str, str]] | None = None,
    validation: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What an exported model records about its training (JSON-serialisable; the keys are
    listed in this module's docstring). `styles`: each style's {"name", "image", "thumbnail"}
    (the thumbnail from `make_style_thumbnail`) in the model's order; `validation`, the
    validation figures at `step`. Both are recorded when given; `style_image` and
    `style_thumbnail` are the first style's."""
    first = styles[0] if styles else None
    style_image = first["image"] if first else config.style_image
    metadata = {
        "pad": int(config.train.pad),
        "image_size": int(config.train.image_size),
        "style_image": str(Path(style_image).absolute()),
        "style_size": config.style_size,
        "loss": dataclasses.asdict(spec),
        "vgg": {"weights": config.vgg.weights, "preprocessing": vgg_preprocessing},
        "step": int(step),
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
    }
    if styles:
        metadata["styles"] = [dict(style) for style in styles]
        metadata[STYLE_THUMBNAIL_KEY] = first["thumbnail"]
    if validation is not None:
        metadata["validation"] = {key: float(value) for key, value in validation.items()}
    return metadata


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


def export_model(
    workdir: str | os.PathLike,
    graphdef: nnx.GraphDef,
    params: Any,
    metadata: dict[str, Any],
    filename: str = MODEL_FILENAME,
) -> None:
    """Write WORKDIR/model.npz (or WORKDIR/`filename`: `BEST_FILENAME`) from training
    parameters (process 0 only; `params` may be replicated global arrays): what stylize.py
    and evaluate load."""
    if jax.process_index() != 0:
        return
    host_params = jax.tree.map(lambda x: np.asarray(_first_local_copy(x)), params)
    save_model(Path(workdir) / filename, nnx.merge(graphdef, host_params), metadata)


def _first_local_copy(x: Any) -> Any:
    """A replicated array's copy on this process's first device (a multi-process global
    array cannot be read whole by one process)."""
    return x.addressable_data(0) if isinstance(x, jax.Array) else x


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
    """Read and validate an exported model file: (flat params, metadata)."""
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
    """The validated metadata of an exported model file, without reading its parameters."""
    path = resolve_model_path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            encoded = data[META_KEY] if META_KEY in data.files else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ModelFileError(f"{path}: not an fnst_jax model file ({e})") from e
    if encoded is None:
        raise ModelFileError(f"{path}: not an fnst_jax model file (no {META_KEY} entry)")
    return _decode_metadata(path, encoded)


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


def load_model(
    path: str | os.PathLike, dtype: jnp.dtype = jnp.float32
) -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the TransformerNet of an exported model; checks every name and shape.

    A training workdir without `model.npz` (a run stopped before its first export) falls
    back to its latest complete checkpoint.
    """
    folder = Path(path)
    if folder.is_dir() and not (folder / MODEL_FILENAME).exists():
        from fnst_jax import checkpoint  # orbax: only needed for this fallback

        restored = checkpoint.restore_params(folder)
        if restored is not None:
            params, meta = restored
            arrays = flatten_params(params)
        else:
            arrays, meta = read_model(path)  # raises: no model, no checkpoint
    else:
        arrays, meta = read_model(path)
    return model_from_arrays(arrays, path, dtype), meta


def model_from_arrays(
    arrays: dict[str, np.ndarray], path: str | os.PathLike, dtype: jnp.dtype = jnp.float32
) -> TransformerNet:
    """The TransformerNet holding flat parameters (`flat_params` names: a model file's or
    `flatten_params` of a checkpoint's); every name and shape is checked, and a mismatch is a
    ModelFileError naming `path` (where they came from)."""
    try:
        num_styles = num_styles_of(arrays)
    except StyleError as error:
        raise ModelFileError(f"{path}: not a TransformerNet ({error})") from None
    model = TransformerNet(num_styles=num_styles, dtype=dtype, rngs=nnx.Rngs(0))
    expected = flat_params(model)
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path}: parameters do not match TransformerNet "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for name, value in expected.items():
        if arrays[name].shape != value.shape:
            raise ModelFileError(
                f"{path}: parameter {name} has shape {arrays[name].shape}, expected {value.shape}"
            )
    set_flat_params(model, arrays)
    return model


def set_flat_params(model: TransformerNet, flat: dict[str, np.ndarray]) -> None:
    """Load parameters keyed as in `flat_params` into `model` in place."""
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    paths, treedef = jax.tree_util.tree_flatten_with_path(pure)
    values = [jnp.asarray(flat[param_name(p)]) for p, _ in paths]
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
    nnx.update(model, state)


if __name__ == "__main__":
    # `python -m fnst_jax.export --model M --format onnx|stablehlo --output F`: the
    # deployment exports live in fnst_jax.deploy (its cli module has the flags).
    import sys

    from fnst_jax import runtime
    from fnst_jax.deploy import cli

    runtime.enable_compilation_cache()
    sys.exit(cli.main(sys.argv))
