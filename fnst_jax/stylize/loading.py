"""Which engine runs a model path. Imports no JAX.

`load_stylizer(path, ...)` is what `stylize.py --model` calls: an exported `.onnx` file runs
in onnxruntime (`onnx_engine.OnnxStylizer`); anything else (a training workdir, an exported
`.npz` model) runs in the JAX engine (`engine.Stylizer`), which is imported only then, so
stylizing with an ONNX model never loads JAX, Flax or XLA.

Both engines offer what the runs use (`stylize`, `stylize_batch`, `stylize_float`,
`bucket_shape`, `needs_tiling`, `batch_limit`, `batch_size`, `max_pixels`), take the same
settings (`defaults`) and tile images above `max_pixels` through `tiling`, exact or
approximate alike.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fnst_jax.errors import UsageError
from fnst_jax.stylize.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BUCKET,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE,
)

if TYPE_CHECKING:
    from fnst_jax.stylize.engine import Stylizer
    from fnst_jax.stylize.onnx_engine import OnnxStylizer

_use_compilation_cache = False


def use_compilation_cache() -> None:
    """Let the JAX engine, when a model needs it, turn on JAX's persistent compilation cache
    first (`runtime.enable_compilation_cache`), as `stylize.py` does; in-process callers
    such as tests leave it off."""
    global _use_compilation_cache
    _use_compilation_cache = True


def load_stylizer(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    pad: int | None = None,
    bucket: int = DEFAULT_BUCKET,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile: int = DEFAULT_TILE,
    tile_statistics: str = "exact",
) -> Stylizer | OnnxStylizer:
    """The engine for a model path. An `.onnx` file's pad and dtype were fixed at export
    (a different --pad or --dtype is a UsageError) and onnxruntime compiles nothing, so
    `bucket` does not apply to it; the JAX engine raises `model_file.ModelFileError` for an
    unusable model file."""
    from fnst_jax.stylize import onnx_engine  # numpy and onnxruntime only

    if onnx_engine.is_onnx_file(path):
        stylizer = onnx_engine.OnnxStylizer(
            path,
            batch_size=batch_size,
            max_pixels=max_pixels,
            tile=tile,
            tile_statistics=tile_statistics,
        )
        if dtype != "float32":
            raise UsageError(
                f"--dtype {dtype} does not apply to an ONNX model: its dtype "
                f"({stylizer.properties.get('dtype', 'float32')}) was fixed at export"
            )
        if pad is not None and pad != stylizer.pad:
            raise UsageError(
                f"--pad {pad}: an ONNX model's pad was fixed at export ({stylizer.pad} px); "
                f"export it again with --pad {pad}"
            )
        return stylizer
    if _use_compilation_cache:
        from fnst_jax import runtime

        runtime.enable_compilation_cache()
    from fnst_jax.stylize.engine import Stylizer

    return Stylizer.from_model_file(
        path,
        dtype=dtype,
        pad=pad,
        bucket=bucket,
        batch_size=batch_size,
        max_pixels=max_pixels,
        tile=tile,
        tile_statistics=tile_statistics,
    )
