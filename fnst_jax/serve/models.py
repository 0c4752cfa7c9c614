"""The models a service serves: found on disk once at startup, loaded, described.

* `find_models(paths)`: model files and folders -> (name, path) pairs. A file is served
  as given; a folder is searched (recursively, hidden folders and orbax `checkpoints/`
  skipped) for fnst_jax model files (`*.npz` holding the model metadata entry: a
  training workdir's `model.npz` and `best.npz`, or exported files under any name); a
  training workdir that has checkpoints but no `model.npz` yet is served from its latest
  checkpoint (`export.load_model`).
* Names (`model_file.model_name`): a file's stem; `model.npz` takes its folder's name
  (`runs/mosaic/model.npz` -> `mosaic`) and `best.npz` its folder's name plus `-best`. A
  multi-style model serves each of its styles as its own model, NAME-STYLE (`runs/four` ->
  `four-candy`, `four-mosaic`, ...; one copy of the parameters, the style chosen per
  entry). Names are restricted to letters, digits, `.`, `_` and `-`, and must be unique.
  A request names a model only from this loaded set: no path from a request ever reaches
  the file system.
* `load_models`: each model as a `ServedModel`: one `Stylizer` per device (the stylize
  engine: what `stylize.py` computes) plus what `GET /v1/models` describes, and the
  style thumbnail (metadata key `style_thumbnail`: a base64 JPEG; models without one show
  their name only).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from fnst_jax import export, model_file, runtime, stroke
from fnst_jax.errors import UserError
from fnst_jax.stylize.defaults import DEFAULT_MAX_PIXELS
from fnst_jax.stylize.engine import Stylizer

log = logging.getLogger(__name__)

_SKIPPED_FOLDERS = {"checkpoints"}
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


class ModelSetError(UserError, ValueError):
    """The models given cannot be served as a set (none found, or two with one name)."""


@dataclasses.dataclass
class ServedModel:
    """One loaded model: its name, file, metadata, thumbnail and per-device Stylizers."""

    name: str
    path: Path
    metadata: dict[str, Any]
    stylizers: list[Stylizer]  # one per device the service runs on, same parameters
    thumbnail: bytes | None
    dtype: str

    @property
    def pad(self) -> int:
        return self.stylizers[0].pad

    @property
    def native_size(self) -> int | None:
        """The style's longest side as trained (px), which `stroke_scale=auto` runs the
        network at; None when the model records none (auto then runs at the output size)."""
        return self.stylizers[0].native_size

    def describe(self) -> dict[str, Any]:
        """The JSON entry of `GET /v1/models`."""
        loss = self.metadata.get("loss") or {}
        style_image = self.metadata.get("style_image")
        # a multi-style model's styles, the names `?mix=` takes ([] for one style)
        styles = list(self.stylizers[0].style_names)
        styles = styles if len(styles) > 1 else []
        return {
            "name": self.name,
            "style": Path(style_image).stem if style_image else None,
            "thumbnail_url": f"/v1/models/{self.name}/style" if self.thumbnail else None,
            "step": self.metadata.get("step"),
            "pad": self.pad,
            "loss_layers": {
                "style": list(loss.get("style_layers") or []),
                "content": loss.get("content_layer"),
            },
            "dtype": self.dtype,
            "image_size": self.metadata.get("image_size"),
            "native_size": self.native_size,
            "styles": styles,
        }


def model_name(path: Path) -> str:
    """The name a model file is served under (see the module docstring)."""
    name = model_file.model_name(path)
    return _UNSAFE_NAME_CHARACTERS.sub("-", name).strip("-.") or "model"


def _models_in_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_FOLDERS)
        for name in sorted(files):
            path = Path(root) / name
            if name.endswith(".npz") and not name.startswith("."):
                if model_file.is_model_file(path):
                    found.append(path)
                else:
                    log.info("skipping %s: not an fnst_jax model file", path)
    if not found and (folder / "checkpoints").is_dir():
        found.append(folder)  # a workdir before its first export: its latest checkpoint
    return found


def find_models(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Model files and folders -> (name, path) pairs, sorted by name; raises
    ModelSetError (nothing found, duplicate names) or ModelFileError (missing path)."""
    by_name: dict[str, Path] = {}
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            files = _models_in_folder(path)
            if not files:
                raise ModelSetError(f"{path}: folder holds no fnst_jax model file (*.npz)")
        elif path.is_file():
            files = [path]
        else:
            raise model_file.ModelFileError(f"{path}: no such model file or folder")
        for file in files:
            name = model_name(file)
            if name in by_name and by_name[name].resolve() != file.resolve():
                raise ModelSetError(
                    f"two models would be served as {name!r}: {by_name[name]} and {file}; "
                    "rename one of the files"
                )
            by_name[name] = file
    if not by_name:
        raise ModelSetError("no models given")
    return sorted(by_name.items())


def thumbnail(metadata: dict[str, Any], name: str) -> bytes | None:
    """The style thumbnail JPEG from the metadata, or None (absent or unusable: logged)."""
    if not metadata.get(model_file.STYLE_THUMBNAIL_KEY):
        return None
    data = model_file.style_thumbnail_jpeg(metadata) or b""
    if not data.startswith(b"\xff\xd8"):
        log.warning(
            "model %s: %s is not a base64 JPEG; showing the name only",
            name,
            model_file.STYLE_THUMBNAIL_KEY,
        )
        return None
    return data


def load_models(
    paths: Sequence[str | os.PathLike],
    *,
    dtype: str = "float32",
    bucket: int = 64,
    max_batch: int = 8,
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, ServedModel]:
    """Find and load every model; one Stylizer per device (default: the default device).

    The Stylizers use `stylize.py`'s defaults for everything a request cannot set (the
    model's training pad, tiling above `defaults.DEFAULT_MAX_PIXELS`), so a request returns
    what `stylize.py` writes for the same image and options.
    """
    compute_dtype = runtime.dtype_from_name(dtype)
    models = {}
    for name, path in find_models(paths):
        network, metadata = export.load_model(path, compute_dtype)
        pad = int(metadata.get("pad") or 0)  # as Stylizer.from_model_file defaults it
        for style, (served, style_metadata) in enumerate(_styles_of(name, network, metadata)):
            if served in models:
                raise ModelSetError(
                    f"two models would be served as {served!r} (the styles of a multi-style "
                    f"model are served as MODEL-STYLE): {models[served].path} and {path}"
                )
            stylizers = []
            for device in devices or [None]:
                stylizer = Stylizer(
                    network,
                    pad=pad,
                    bucket=bucket,
                    batch_size=max_batch,
                    max_pixels=DEFAULT_MAX_PIXELS,
                    style=style,
                )
                stylizer.style_names = model_file.style_names(metadata, network.num_styles)
                stylizer.native_size = stroke.native_size(metadata)  # as from_model_file
                if device is not None:
                    # Committed parameters make every call of this Stylizer run on `device`.
                    stylizer.state = jax.device_put(stylizer.state, device)
                stylizers.append(stylizer)
            models[served] = ServedModel(
                served, path, style_metadata, stylizers, thumbnail(style_metadata, served), dtype
            )
            log.info("loaded model %s from %s (pad %d)", served, path, pad)
    return models


def _styles_of(
    name: str, network: Any, metadata: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """(served name, metadata) per style: the model itself for one style; for a multi-style
    model each style as its own entry, NAME-STYLE, whose style image and thumbnail are that
    style's (the parameters are shared)."""
    if network.num_styles == 1:
        return [(name, metadata)]
    entries = metadata.get("styles") or [{} for _ in range(network.num_styles)]
    names = model_file.style_names(metadata, network.num_styles)
    served = []
    for style_name, entry in zip(names, entries, strict=True):
        own = dict(metadata, style_image=entry.get("image"))
        own[model_file.STYLE_THUMBNAIL_KEY] = entry.get("thumbnail")
        served.append((_UNSAFE_NAME_CHARACTERS.sub("-", f"{name}-{style_name}"), own))
    return served
