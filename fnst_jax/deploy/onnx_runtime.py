"""Stylize with an exported ONNX model in onnxruntime: what `stylize.py --model x.onnx` runs.

`OnnxStylizer` has the interface of `stylize.engine.Stylizer` that the stylize runs use
(`stylize`, `stylize_batch`, `stylize_float`, `bucket_shape`, `needs_tiling`,
`batch_limit`, `batch_size`, `max_pixels`), so images, folders and videos go through the same
code. This module imports no JAX: with numpy, Pillow and onnxruntime installed,

    from fnst_jax.deploy.onnx_runtime import OnnxStylizer
    styled = OnnxStylizer("mosaic.onnx").stylize(image)   # uint8 (H, W, 3) in and out

What differs from the JAX engine:
  * The padding is inside the model (its training pad, fixed at export), and onnxruntime
    runs any shape without compiling: no buckets; images of the same size share a call.
  * No tiling: images above `max_pixels` are refused (`ImageSizeError`, naming
    --max-pixels). Tiling needs the network with given instance-norm statistics and
    reflection at a box inside the array (transformer_net's box form), which the exported
    graph does not have; raise --max-pixels (memory grows with it) or use the .npz model.
  * Images need sides of at least the model's `min_side` px (3 with any training pad;
    `onnx_graph.smallest_side`).
The output is the JAX engine's within 1/255 after rounding (the exporter verified the file;
tests/test_deploy_stylize.py checks the command line).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fnst_jax import image_io
from fnst_jax.deploy import FLOAT_OUTPUT_NAME, INPUT_NAME
from fnst_jax.errors import UserError

# engine.Stylizer's defaults (tests/test_deploy_stylize.py keeps them equal).
DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_BATCH_SIZE = 4
SIZE_MULTIPLE = 4  # transformer_net.SIZE_MULTIPLE: the network input is padded to it


class OnnxModelError(UserError, ValueError):
    """An .onnx file that cannot be loaded or is not an fnst_jax export."""


class ImageSizeError(UserError, ValueError):
    """An image above max_pixels (an ONNX model cannot stylize it in tiles) or below the
    model's smallest side."""


def is_onnx_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".onnx"


class OnnxStylizer:
    """An exported ONNX model in an onnxruntime session, with batching around it."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        """path: an .onnx file written by `python -m fnst_jax.export`. batch_size: images
        of one size per call. max_pixels: larger images are refused (no tiling), and a call
        holds at most about this many pixels."""
        try:
            import onnxruntime
        except ImportError as e:
            raise UserError(
                f"{path}: an ONNX model needs onnxruntime ({e}): pip install -e '.[onnx]'"
            ) from None
        if not Path(path).is_file():
            raise OnnxModelError(f"{path}: model file not found")
        providers = [
            p for p in onnxruntime.get_available_providers() if p != "AzureExecutionProvider"
        ]
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime's own exception types are not exported
            raise OnnxModelError(f"{path}: onnxruntime cannot load it ({e})") from e
        properties = self.session.get_modelmeta().custom_metadata_map
        inputs = self.session.get_inputs()
        if (
            "fnst_jax_version" not in properties
            or [i.name for i in inputs] != [INPUT_NAME]
            or inputs[0].type != "tensor(uint8)"
        ):
            raise OnnxModelError(
                f"{path}: not an ONNX model exported by fnst_jax (python -m fnst_jax.export)"
            )
        self.properties = dict(properties)
        self.pad = int(properties.get("pad", 0))
        self.min_side = int(properties.get("min_side", 1))
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = int(max_pixels)

    # -- the API (as engine.Stylizer)

    def stylize(self, image: np.ndarray, *, preserve_color: bool = False) -> np.ndarray:
        """One uint8 (H, W, 3) RGB image -> the stylized uint8 (H, W, 3)."""
        return self.stylize_batch([image], preserve_color=preserve_color)[0]

    def stylize_batch(
        self, images: Sequence[np.ndarray], *, preserve_color: bool = False
    ) -> list[np.ndarray]:
        """uint8 (H_i, W_i, 3) images -> stylized uint8 images, in order; images of the
        same size share calls (up to `batch_limit`)."""
        outputs = self._stylize_floats(images)
        results = []
        for output, image in zip(outputs, images, strict=True):
            if preserve_color:
                output = image_io.transfer_luminance(output, image)
            results.append(image_io.to_uint8(output))
        return results

    def stylize_float(self, image: np.ndarray) -> np.ndarray:
        """float32 (H, W, 3) on the 0..255 scale, unclamped and unrounded."""
        return self._stylize_floats([image])[0]

    # -- shapes (the run's grouping and batching use these)

    def bucket_shape(self, height: int, width: int, pad: int | None = None) -> tuple[int, int]:
        """The network input's shape inside the model: the image plus its train pad,
        rounded up to a multiple of 4 (no buckets: onnxruntime runs any shape)."""
        pad = self.pad if pad is None else pad

        def side(size: int) -> int:
            padded = size + 2 * min(pad, size - 1)
            return -(-padded // SIZE_MULTIPLE) * SIZE_MULTIPLE

        return side(height), side(width)

    def needs_tiling(self, height: int, width: int) -> bool:
        """Images above max_pixels would need tiles; this engine refuses them."""
        return height * width > self.max_pixels

    def batch_limit(self, pixels_per_image: int) -> int:
        """Images per call: batch_size, at most about max_pixels pixels in all."""
        return max(1, min(self.batch_size, self.max_pixels // max(pixels_per_image, 1)))

    # -- the session

    def _check_size(self, height: int, width: int) -> None:
        if self.needs_tiling(height, width):
            raise ImageSizeError(
                f"{width}x{height} image ({height * width} pixels) is above --max-pixels "
                f"({self.max_pixels}): ONNX models are not tiled; raise --max-pixels (memory "
                "grows with it) or stylize with the .npz model, which tiles"
            )
        if min(height, width) < self.min_side:
            raise ImageSizeError(
                f"{width}x{height} image is too small for this ONNX model (sides of at least "
                f"{self.min_side} px); the .npz model stylizes any size"
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> the model's float32 output (N, H, W, 3)."""
        return self.session.run([FLOAT_OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def _stylize_floats(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        same_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            image_io.check_rgb_image(image)
            self._check_size(*image.shape[:2])
            same_size.setdefault(image.shape[:2], []).append(index)
        results: list[np.ndarray | None] = [None] * len(images)
        for (height, width), indices in same_size.items():
            bucket_h, bucket_w = self.bucket_shape(height, width)
            limit = self.batch_limit(bucket_h * bucket_w)
            for start in range(0, len(indices), limit):
                chunk = indices[start : start + limit]
                outputs = self.run(np.stack([images[i] for i in chunk]))
                for index, output in zip(chunk, outputs, strict=True):
                    results[index] = output
        return results
