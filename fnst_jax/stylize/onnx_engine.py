"""Stylize with an exported ONNX model in onnxruntime: what `stylize.py --model x.onnx` runs.

`OnnxStylizer` has the interface of `engine.Stylizer` that the stylize runs use
(`stylize`, `stylize_batch`, `stylize_float`, `bucket_shape`, `needs_tiling`,
`batch_limit`, `batch_size`, `max_pixels`), so images, folders and videos go through the same
code. This module imports no JAX: with numpy, Pillow and onnxruntime installed (and the onnx
package for tiling),

    from fnst_jax.stylize.onnx_engine import OnnxStylizer
    styled = OnnxStylizer("mosaic.onnx").stylize(image)   # uint8 (H, W, 3) in and out

What differs from the JAX engine:
  * The padding is inside the model (its training pad, fixed at export), and onnxruntime
    runs any shape without compiling: no buckets; images of the same size share a call.
  * Tiling (images above `max_pixels`) goes through the same `stylize.tiling` code, exact or
    approximate, with the network in its box form: the file's tiling functions
    (`onnx_functions`; `tile_forward` for the tiles and exact statistics, `norm_moments`
    for approximate ones). A file exported before they existed cannot tile (a UserError
    saying to export it again).
  * Untiled images need sides of at least the model's `min_side` px (3 with any training
    pad; `deploy.onnx_graph.smallest_side`).
  * A multi-style model exported with `--style-input` stylizes in style 0 unless told
    (`with_style`: an index or a mix, fed as its `style` input); it has no tiling functions,
    so images above `max_pixels` are refused (a UserError saying what to do).
The output is the JAX engine's within 1/255 after rounding (the exporter verified the file,
tiling included; tests/test_deploy_stylize.py checks the command line).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fnst_jax import image_io, stroke
from fnst_jax.deploy_interface import (
    BOX_INPUT,
    FLOAT_OUTPUT_NAME,
    INPUT_NAME,
    INTERIOR_INPUT,
    MOMENTS_FUNCTION,
    NUM_NORM_LAYERS,
    STYLE_INPUT_NAME,
    TILE_FUNCTION,
    TILE_INPUT,
    TILE_OUTPUT,
    given_names,
    moment_names,
    summary_names,
)
from fnst_jax.errors import UserError
from fnst_jax.model_file import style_weights
from fnst_jax.stylize import tiling
from fnst_jax.stylize.arrays import SIZE_MULTIPLE, network_input, round_up
from fnst_jax.stylize.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE,
    TILE_STATISTICS,
)
from fnst_jax.stylize.onnx_functions import FunctionSessions
from fnst_jax.stylize.tiling import NormStatistics, Summary


class OnnxModelError(UserError, ValueError):
    """An .onnx file that cannot be loaded or is not an fnst_jax export."""


class ImageSizeError(UserError, ValueError):
    """An image below the model's smallest side."""


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
        tile: int = DEFAULT_TILE,
        tile_statistics: str = "exact",
    ):
        """path: an .onnx file written by `python -m fnst_jax.export`. batch_size: images
        of one size per call. max_pixels: larger images are tiled, and a call holds at most
        about this many pixels. tile, tile_statistics: as `engine.Stylizer`'s."""
        if tile_statistics not in TILE_STATISTICS:
            raise ValueError(
                f"tile_statistics must be one of {TILE_STATISTICS}, not {tile_statistics!r}"
            )
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
        # A multi-style model exported with --style-input takes each image's style weights.
        self.style_input = "style_input" in properties
        expected = [INPUT_NAME, STYLE_INPUT_NAME] if self.style_input else [INPUT_NAME]
        if (
            "fnst_jax_version" not in properties
            or [i.name for i in inputs] != expected
            or inputs[0].type != "tensor(uint8)"
        ):
            raise OnnxModelError(
                f"{path}: not an ONNX model exported by fnst_jax (python -m fnst_jax.export)"
            )
        self.path = path
        self.properties = dict(properties)
        self.pad = int(properties.get("pad", 0))
        self.native_size = stroke.native_size(properties)  # the stroke scale's "auto"
        if self.style_input:
            self.style_names = properties.get("styles", "").split(",")
        else:  # one style or mix, chosen at export (`deploy.cli --style`)
            self.style_names = [properties.get("style") or "style"]
        self.num_styles = len(self.style_names)
        self.style = style_weights(self.num_styles, 0)[0]  # style 0 unless told
        self.min_side = int(properties.get("min_side", 1))
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = int(max_pixels)
        self.tile = round_up(max(int(tile), SIZE_MULTIPLE), SIZE_MULTIPLE)
        self.tile_statistics = tile_statistics
        self.providers = providers
        self._functions: FunctionSessions | None = None  # made when an image needs tiles

    # -- the API (as engine.Stylizer)

    def with_style(self, style: int | Sequence[float]) -> OnnxStylizer:
        """A copy (sharing the session) that stylizes in another style (an index) or mix (one
        weight per style) of a --style-input file (`model_file.style_weights`; raises
        StyleError)."""
        other = copy.copy(self)
        other.style = style_weights(self.num_styles, style)[0]
        return other

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

    def image_statistics(self, image: np.ndarray) -> NormStatistics:
        """The whole-image moments the tiles of a large image are normalised with, by
        `tile_statistics` (`tiling.image_statistics`)."""
        return tiling.image_statistics(self, image)

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
        """Images of more than `max_pixels` pixels are stylized in tiles."""
        return height * width > self.max_pixels

    def batch_limit(self, pixels_per_image: int) -> int:
        """Images per call: batch_size, at most about max_pixels pixels in all."""
        return max(1, min(self.batch_size, self.max_pixels // max(pixels_per_image, 1)))

    # -- the session

    def _check_size(self, height: int, width: int) -> None:
        if min(height, width) < self.min_side:
            raise ImageSizeError(
                f"{width}x{height} image is too small for this ONNX model (sides of at least "
                f"{self.min_side} px); the .npz model stylizes any size"
            )

    def run(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> the model's float32 output (N, H, W, 3)."""
        feeds = {INPUT_NAME: batch}
        if self.style_input:
            feeds[STYLE_INPUT_NAME] = np.tile(self.style, (len(batch), 1))
        return self.session.run([FLOAT_OUTPUT_NAME], feeds)[0]

    def _stylize_floats(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Images above max_pixels in tiles, one by one; the others by size, batched."""
        for image in images:
            image_io.check_rgb_image(image)
        results: list[np.ndarray | None] = [None] * len(images)
        same_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if self.needs_tiling(*image.shape[:2]):
                # The tiling functions reflect by gathering: no smallest side.
                results[index] = tiling.stylize_tiled(self, image)
                continue
            self._check_size(*image.shape[:2])
            same_size.setdefault(image.shape[:2], []).append(index)
        for (height, width), indices in same_size.items():
            bucket_h, bucket_w = self.bucket_shape(height, width)
            limit = self.batch_limit(bucket_h * bucket_w)
            for start in range(0, len(indices), limit):
                chunk = indices[start : start + limit]
                outputs = self.run(np.stack([images[i] for i in chunk]))
                for index, output in zip(chunk, outputs, strict=True):
                    results[index] = output
        return results

    # -- tiling's TilingEngine (the file's tiling functions)

    def functions(self) -> FunctionSessions:
        """The file's tiling functions in onnxruntime (read on first use)."""
        if self.style_input:
            raise OnnxModelError(
                f"{self.path}: a file exported with --style-input cannot tile images above "
                f"--max-pixels ({self.max_pixels}); raise --max-pixels, or stylize with the "
                ".npz model"
            )
        if self._functions is None:
            self._functions = FunctionSessions(self.path, self.providers)
        return self._functions

    def tile_outputs(
        self, tiles: np.ndarray, boxes: np.ndarray, statistics: NormStatistics
    ) -> np.ndarray:
        """uint8 tile arrays (N, H, W, 3) and their (N, 4) boxes -> float32 (N, H, W, 3),
        every norm given `statistics` (`tile_forward`; one call per distinct box)."""
        feeds = _given_feeds(statistics)
        outputs = np.empty(tiles.shape, np.float32)
        for box, _, indices in _same_boxes(boxes):
            feeds.update({TILE_INPUT: tiles[indices], BOX_INPUT: box})
            (outputs[indices],) = self.functions().run(TILE_FUNCTION, [TILE_OUTPUT], feeds)
        return outputs

    def tile_summaries(
        self,
        tiles: np.ndarray,
        boxes: np.ndarray,
        interiors: np.ndarray,
        layer: int,
        given: NormStatistics,
    ) -> Summary:
        """Per tile, (count, mean, squared deviations) of norm layer `layer`'s input over
        its interior, the layers before it normalised with `given` (`tile_forward`, its
        session stopping at that layer)."""
        feeds = _given_feeds(given)
        indices, parts = [], []
        for box, interior, group in _same_boxes(boxes, interiors):
            feeds.update({TILE_INPUT: tiles[group], BOX_INPUT: box, INTERIOR_INPUT: interior})
            count, mean, squares = self.functions().run(TILE_FUNCTION, summary_names(layer), feeds)
            n = len(group)
            counts = np.full((n, 1, 1, 1), count, np.float32)
            parts.append((counts, mean.reshape(n, 1, 1, -1), squares.reshape(n, 1, 1, -1)))
            indices.append(group)
        order = np.argsort(np.concatenate(indices))  # back to the tiles' order
        counts, means, squares = (
            np.concatenate(arrays)[order] for arrays in zip(*parts, strict=True)
        )
        return counts, means, squares

    def norm_statistics(self, image: np.ndarray, pad: int) -> NormStatistics:
        """Per norm layer, the (1, 1, 1, C) moments of one uint8 image with a `pad` border,
        as its own (untiled) stylization measures them (`norm_moments`)."""
        source, _ = network_input(image, pad)
        box = np.array([0, source.shape[0], 0, source.shape[1]], np.int64)
        names = [name for layer in range(NUM_NORM_LAYERS) for name in moment_names(layer)]
        moments = self.functions().run(
            MOMENTS_FUNCTION, names, {TILE_INPUT: source[None], BOX_INPUT: box}
        )
        return [
            (mean.reshape(1, 1, 1, -1), variance.reshape(1, 1, 1, -1))
            for mean, variance in zip(moments[0::2], moments[1::2], strict=True)
        ]


def _given_feeds(statistics: NormStatistics) -> dict[str, np.ndarray]:
    """tile_forward's inputs for the moments of each norm layer (as many as are given)."""
    feeds = {}
    for layer, (mean, variance) in enumerate(statistics):
        mean_name, variance_name = given_names(layer)
        feeds[mean_name] = np.asarray(mean, np.float32).reshape(-1)
        feeds[variance_name] = np.asarray(variance, np.float32).reshape(-1)
    return feeds


def _same_boxes(
    boxes: np.ndarray, interiors: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """Tiles grouped by (box, interior), which tile_forward takes once per call:
    [(int64 box, int64 interior or None, the tiles' indices)]."""
    keys = boxes if interiors is None else np.concatenate([boxes, interiors], axis=1)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, key in enumerate(keys.tolist()):
        groups.setdefault(tuple(key), []).append(index)
    return [
        (
            np.array(key[:4], np.int64),
            None if interiors is None else np.array(key[4:], np.int64),
            np.array(indices),
        )
        for key, indices in groups.items()
    ]
