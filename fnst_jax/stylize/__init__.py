"""Stylize images, folders and videos with an exported TransformerNet.

Where things happen:
  * `engine.py`: `Stylizer`, the one forward pass: uint8 images in, uint8 images out
    (`stylize`, `stylize_batch`), exactly `transformer_net.stylize_padded` whatever the
    bucketing and batching. The command line, an HTTP service and export checks call it.
  * `tiling.py`: images above `max_pixels`, in tiles normalised with the whole image's
    statistics (exact by default), so they add up to the untiled result.
  * `onnx_engine.py`: `OnnxStylizer`, the same interface for an exported `.onnx` file in
    onnxruntime, tiling included (`onnx_functions.py`: the file's tiling functions).
  * `inputs.py`: files, folders and globs -> jobs (source, destination); output naming,
    what is refused or skipped, the single-file `--output` checks.
  * `run.py`: the image and video runs (decode/encode in threads around the network);
    `reporter.py`: their progress, problems and summary.
  * `cli.py`: the flags of `python stylize.py` and `main(argv) -> exit status`.
  * `styles.py`: which style(s) of a multi-style model to run (`--style`, `--style-mix`).
  * `arrays.py`: numpy helpers they share (size rounding, an image's network input).
  * `loading.py`: `load_stylizer`, the engine for a model path (`engine.Stylizer`, or
    `onnx_engine.OnnxStylizer` for an `.onnx` file); `defaults.py`: the settings both take.

Only `engine.py` imports JAX, and importing this package does not import it (`Stylizer` is
loaded on first use), so `stylize.py --model x.onnx` runs without JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fnst_jax.stylize.engine import Stylizer

__all__ = ["Stylizer"]


def __getattr__(name: str) -> Any:
    """`fnst_jax.stylize.Stylizer`, imported (with JAX) when first asked for."""
    if name == "Stylizer":
        from fnst_jax.stylize.engine import Stylizer

        return Stylizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
