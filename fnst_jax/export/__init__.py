"""The model file with JAX: a TransformerNet (or training parameters) to and from `.npz`.

The file format itself (layout, metadata keys, names, thumbnails; no JAX) is
`fnst_jax.model_file`. Here:
  * `save_model(path, model, metadata)`: a TransformerNet's parameters (`flat_params`) and
    metadata, written with `model_file.write_model`;
  * `export_model(workdir, graphdef, params, metadata)`: what training writes at every
    checkpoint (WORKDIR/model.npz) and for the best validated parameters (WORKDIR/best.npz),
    with `model_metadata` recording the run;
  * `load_model(path)`: the TransformerNet of a model file, or of a training workdir
    (its model.npz, else its latest complete checkpoint), every name and shape checked
    (`model_from_arrays`); `stylize.py`, `evaluate`, the service and the exporter read
    models with it.

`python -m fnst_jax.export --model M --format onnx|stablehlo --output F` is the deployment
export (`fnst_jax.deploy.cli`, run by this package's `__main__`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from fnst_jax import stroke
from fnst_jax.losses import LossSpec
from fnst_jax.model_file import (
    MODEL_FILENAME,
    STYLE_THUMBNAIL_KEY,
    ModelFileError,
    StyleError,
    param_name,
    read_model,
    write_model,
)
from fnst_jax.transformer_net import TransformerNet, num_styles_of


def flatten_params(params: Any) -> dict[str, np.ndarray]:
    """A nested parameter dict -> {"conv1/conv/conv/kernel": array, ...}."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {param_name(path): np.asarray(v) for path, v in leaves}


def flat_params(model: TransformerNet) -> dict[str, np.ndarray]:
    return flatten_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def save_model(path: str | os.PathLike, model: TransformerNet, metadata: dict[str, Any]) -> Path:
    """Write the model file atomically (`model_file.write_model`: a crash leaves the old file)."""
    return write_model(path, flat_params(model), metadata)


def save_untrained_model(
    path: str | os.PathLike, metadata: dict[str, Any], *, seed: int = 0
) -> Path:
    """An untrained TransformerNet (random initialisation from `seed`) as a model file: what
    the speed and start-up benchmarks run when no trained model is given (the weights do
    not change the time)."""
    return save_model(path, TransformerNet(rngs=nnx.Rngs(seed)), metadata)


def model_metadata(
    config: ml_collections.ConfigDict,
    spec: LossSpec,
    vgg_preprocessing: str,
    step: int,
    styles: list[dict[str, str]] | None = None,
    validation: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What an exported model records about its training (JSON-serialisable; the keys are
    listed in `model_file`'s docstring). `styles`: each style's {"name", "image", "thumbnail"}
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
    native = _native_size(
        [entry["image"] for entry in styles] if styles else [style_image], config.style_size
    )
    if native is not None:
        metadata[stroke.NATIVE_SIZE_KEY] = native
    if styles:
        metadata["styles"] = [dict(style) for style in styles]
        metadata[STYLE_THUMBNAIL_KEY] = first["thumbnail"]
    if validation is not None:
        metadata["validation"] = {key: float(value) for key, value in validation.items()}
    return metadata


def _native_size(style_paths: list[str], style_size: int | None) -> int | None:
    """The model's native size (`stroke.NATIVE_SIZE_KEY`) from its style images' sizes;
    None when none of the images can be read."""
    sizes = []
    for path in style_paths:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except (OSError, ValueError):
            continue
    return stroke.style_native_size(sizes, style_size) if sizes else None


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
    ModelFileError naming `path` (where they came from).

    The arrays are all the model's state, so the network is built abstractly (shapes and
    dtypes only, `nnx.eval_shape`) and they take the place of its parameters: no random
    initialiser is compiled or run, which was most of a cold `stylize.py`'s start."""
    try:
        num_styles = num_styles_of(arrays)
    except StyleError as error:
        raise ModelFileError(f"{path}: not a TransformerNet ({error})") from None
    abstract = nnx.eval_shape(
        lambda: TransformerNet(num_styles=num_styles, dtype=dtype, rngs=nnx.Rngs(0))
    )
    graphdef, state = nnx.split(abstract)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
    expected = {param_name(key_path): leaf for key_path, leaf in leaves}
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
    values = [jnp.asarray(arrays[name], leaf.dtype) for name, leaf in expected.items()]
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
    return nnx.merge(graphdef, state)


def set_flat_params(model: TransformerNet, flat: dict[str, np.ndarray]) -> None:
    """Load parameters keyed as in `flat_params` into `model` in place."""
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    paths, treedef = jax.tree_util.tree_flatten_with_path(pure)
    values = [jnp.asarray(flat[param_name(p)]) for p, _ in paths]
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
    nnx.update(model, state)
