"""The exported model: one self-contained `.npz` file that `stylize.py` loads.

Layout: one float32 array per TransformerNet parameter, keyed by its path
(`conv1/conv/conv/kernel`, ...), plus `__fnst_meta__`, a UTF-8 JSON document stored as a
uint8 array, holding the format tag and version and whatever the trainer records (style
image, training pad, loss layers and weights, VGG weights, step). Nothing is pickled: the
file is read with `allow_pickle=False`.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnst_jax.transformer_net import TransformerNet

FORMAT = "fnst_jax.model"
VERSION = 1
META_KEY = "__fnst_meta__"
MODEL_FILENAME = "model.npz"


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, or not an fnst_jax model."""


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """A nested parameter dict -> {"conv1/conv/conv/kernel": array, ...}."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_path_name(path): np.asarray(v) for path, v in leaves}


def flat_params(model: TransformerNet) -> dict[str, np.ndarray]:
    return flatten_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def save_model(path: str | os.PathLike, model: TransformerNet, metadata: dict[str, Any]) -> Path:
    """Write the model atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, **metadata}
    arrays = {k: v.astype(np.float32) for k, v in flat_params(model).items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: corrupt model metadata ({e})") from e
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an fnst_jax model file (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise ModelFileError(
            f"{path}: model format version {meta['version']} is newer than this fnst_jax "
            f"supports ({VERSION}); upgrade fnst_jax"
        )
    return arrays, meta


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

        restored = checkpoint.restore_latest_params(folder)
        if restored is not None:
            params, meta = restored
            arrays = flatten_params(params)
        else:
            arrays, meta = read_model(path)  # raises: no model, no checkpoint
    else:
        arrays, meta = read_model(path)
    model = TransformerNet(dtype=dtype, rngs=nnx.Rngs(0))
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
    return model, meta


def set_flat_params(model: TransformerNet, flat: dict[str, np.ndarray]) -> None:
    """Load parameters keyed as in `flat_params` into `model` in place."""
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    paths, treedef = jax.tree_util.tree_flatten_with_path(pure)
    values = [jnp.asarray(flat[_path_name(p)]) for p, _ in paths]
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
    nnx.update(model, state)
