"""The stylize engine: uint8 RGB images in, stylized uint8 RGB images out.

The one forward pass every front end calls (the `stylize.py` command line, an HTTP service,
export checks). Its whole API:

    stylizer = Stylizer.from_model_file("runs/mosaic")  # or Stylizer(model, pad=40, ...)
    styled = stylizer.stylize(image)                     # (H, W, 3) uint8 -> (H, W, 3) uint8
    styled_list = stylizer.stylize_batch(images)         # [(H_i, W_i, 3) uint8] -> same
    raw = stylizer.stylize_float(image)                  # float32, 0..255 scale, unrounded

Any size is accepted. `preserve_color=True` keeps the input's colours (stylized luminance,
input chroma: `image_io.transfer_luminance`). `stylize_batch` keeps the order of its inputs.
A multi-style model stylizes in one style or mix at a time: `Stylizer(model, style=...)` or
`stylizer.with_style(...)` (an index or one weight per style; a copy sharing the compiled
programs), style 0 unless told.

What it computes is `transformer_net.stylize_padded(model, image, pad)`, the forward that
training and evaluate optimise and score, whatever the bucket, batch or tile layout: every
image is laid out as its network input (`arrays.network_input`: the train pad, then the
rounding to a multiple of 4, both reflected, exactly as the reference pads) at the top-left
of a bucket-shaped array, and the network (`TransformerNet.forward_with_statistics`) gets
its box, so every layer reflects at the box edges and every instance norm measures inside it
(see transformer_net's module docstring). The bucket padding beyond the box never reaches
the result.

`loading.load_stylizer(path, ...)` picks the engine for a model path: this module's
`Stylizer`, or for an exported `.onnx` file `onnx_engine.OnnxStylizer` (onnxruntime, same
interface, tiling included, no JAX).

Where things happen:
  * `_forward`: the jit-compiled network, shared by every Stylizer of one architecture
    (`TransformerNet.forward_with_statistics`: the output and the moments each norm used);
    `_layer_summary`: one exact-statistics pass of tiling, up to one norm layer.
  * `Stylizer.run_network`: one batch of laid-out images through `_forward`;
    `stylize_batch` groups images by bucket shape and batches around it; images above
    `max_pixels` go to `tiling.stylize_tiled`, which calls back `tile_outputs`,
    `tile_summaries` and `norm_statistics` (tiling's `TilingEngine`).

Speed: XLA compiles the network once per input shape. Network inputs are padded up to a few
bucket shapes (multiples of `bucket`, default 64 px), so images of mixed sizes share a
handful of programs and images of one bucket run in one batch; batch sizes are rounded up
to powers of two, again to bound the compiled shapes.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnst_jax import export, image_io, runtime, stroke
from fnst_jax.model_file import style_names, style_weights
from fnst_jax.stylize import tiling
from fnst_jax.stylize.arrays import network_input, pad_batch, round_up
from fnst_jax.stylize.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BUCKET,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TILE,
    TILE_STATISTICS,
)
from fnst_jax.stylize.tiling import NormStatistics, Summary
from fnst_jax.transformer_net import SIZE_MULTIPLE, Moments, NormControl, TransformerNet


@functools.partial(jax.jit, static_argnums=0)
def _forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    images: jax.Array,
    box: jax.Array,
    given: Sequence[Moments] | None = None,
    style: jax.Array | None = None,
) -> tuple[jax.Array, NormStatistics]:
    """`TransformerNet.forward` as a pure function: (output, the moments each norm layer
    used). given: None (each image normalised with its own statistics inside its box), or
    per norm layer the moments used for every image. style: (N, num_styles) weights of a
    multi-style model (None for one style).

    Module-level and keyed on the (hashable) graph definition, so every Stylizer of the
    same architecture and dtype in a process shares the compiled programs: XLA compiles
    once per input shape, not once per model load."""
    model = nnx.merge(graphdef, state)
    output, records = model.forward_with_statistics(images, box, NormControl(given=given), style)
    return output, [record.moments for record in records]


@functools.partial(jax.jit, static_argnums=(0, 5))
def _layer_summary(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    images: jax.Array,
    boxes: jax.Array,
    interiors: jax.Array,
    layer: int,
    given: Sequence[Moments],
    style: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(count, mean, squared deviations) of norm layer `layer`'s input over each tile's
    interior, the layers before it normalised with `given`. Only that summary is returned,
    so XLA drops every layer after it."""
    model = nnx.merge(graphdef, state)
    missing = [None] * (tiling.NUM_NORM_LAYERS - len(given))
    norms = NormControl(given=[*given, *missing], sum_box=interiors)
    _, records = model.forward_with_statistics(images, boxes, norms, style)
    return records[layer].summary


class Stylizer:
    """A model ready to stylize: the compiled network plus padding, bucketing, batching and
    tiling around it. See the module docstring for the API."""

    def __init__(
        self,
        model: TransformerNet,
        *,
        pad: int = 0,
        bucket: int = DEFAULT_BUCKET,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tile: int = DEFAULT_TILE,
        tile_statistics: str = "exact",
        style: int | Sequence[float] = 0,
    ):
        """model: a TransformerNet (its dtype is the compute dtype). pad: reflection border
        the network sees around each image (the model's training pad). bucket: network
        input sides are padded up to multiples of this, so mixed sizes share compiled
        programs. batch_size: images per network call. max_pixels: larger images are tiled,
        and a call holds at most about this many pixels. tile: the side of the part of the
        image each tile computes (it also sees `tiling.HALO` px of context around it).
        tile_statistics: "exact" (the whole image's instance-norm statistics, computed
        over the tiles: the untiled result) or "approximate" (measured once on a copy
        shrunk to `max_pixels`: faster); see `tiling`. style: which style of a multi-style
        model (an index, or one weight per style for a mix: `model_file.style_weights`);
        ignored by a one-style model."""
        if tile_statistics not in TILE_STATISTICS:
            raise ValueError(
                f"tile_statistics must be one of {TILE_STATISTICS}, not {tile_statistics!r}"
            )
        self.pad = max(0, int(pad))
        self.bucket = round_up(max(int(bucket), SIZE_MULTIPLE), SIZE_MULTIPLE)
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = int(max_pixels)
        self.tile = round_up(max(int(tile), SIZE_MULTIPLE), SIZE_MULTIPLE)
        self.tile_statistics = tile_statistics
        self.graphdef, self.state = nnx.split(model)
        self.num_styles = model.num_styles
        self.style_names = style_names({}, self.num_styles)  # from_model_file: the real ones
        # The stroke scale's "auto" (`fnst_jax.stroke`); from_model_file: the model's own.
        self.native_size: int | None = None
        self.style = style_weights(self.num_styles, style)[0]  # raises StyleError
        self.compiled_shapes: set[tuple[int, ...]] = set()

    def with_style(self, style: int | Sequence[float]) -> Stylizer:
        """A copy that stylizes in another style or mix (shares parameters and programs)."""
        other = copy.copy(self)
        other.style = style_weights(self.num_styles, style)[0]
        return other

    def _style_input(self, count: int) -> jax.Array | None:
        """The model's style input for `count` images (None for a one-style model)."""
        if self.num_styles == 1:
            return None
        return jnp.asarray(np.broadcast_to(self.style, (count, self.num_styles)))

    @classmethod
    def from_model_file(
        cls,
        path: str | os.PathLike,
        *,
        dtype: str = "float32",
        pad: int | None = None,
        **options: int,
    ) -> Stylizer:
        """A Stylizer for an exported model file or a training workdir (`export.load_model`;
        raises `model_file.ModelFileError`). pad: default the model's training pad from its
        metadata, else 0. options: the other keyword arguments of `Stylizer`."""
        model, metadata = export.load_model(path, runtime.dtype_from_name(dtype))
        if pad is None:
            pad = int(metadata.get("pad") or 0)
        stylizer = cls(model, pad=pad, **options)
        stylizer.style_names = style_names(metadata, model.num_styles)
        stylizer.native_size = stroke.native_size(metadata)
        return stylizer

    # -- the API

    def stylize(self, image: np.ndarray, *, preserve_color: bool = False) -> np.ndarray:
        """One uint8 (H, W, 3) RGB image of any size -> the stylized uint8 (H, W, 3)."""
        return _finish(self.stylize_float(image), image, preserve_color)

    def stylize_batch(
        self, images: Sequence[np.ndarray], *, preserve_color: bool = False
    ) -> list[np.ndarray]:
        """uint8 (H, W, 3) RGB images of any sizes -> stylized uint8 images, in order.

        Images of the same bucket shape share network calls (up to `batch_size` at a time);
        images above `max_pixels` are tiled one by one.
        """
        for image in images:
            image_io.check_rgb_image(image)
        results: list[np.ndarray | None] = [None] * len(images)
        same_bucket: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if self.needs_tiling(*image.shape[:2]):
                results[index] = self.stylize(image, preserve_color=preserve_color)
            else:
                same_bucket.setdefault(self.bucket_shape(*image.shape[:2]), []).append(index)
        for indices in same_bucket.values():
            outputs = self._stylize_bucket([images[i] for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                results[index] = _finish(output, images[index], preserve_color)
        return results

    def stylize_float(self, image: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, 3) image -> float32 (H, W, 3) on the 0..255 scale, unclamped and
        unrounded (for measurements; `stylize` rounds it)."""
        image_io.check_rgb_image(image)
        if self.needs_tiling(*image.shape[:2]):
            return tiling.stylize_tiled(self, image)
        return self._stylize_bucket([image])[0]

    # -- shapes

    def bucket_shape(self, height: int, width: int, pad: int | None = None) -> tuple[int, int]:
        """The array shape an image runs in: its network input (padded by `pad`, default
        the Stylizer's), rounded up to the bucket."""
        pad = self.pad if pad is None else pad
        return round_up(height + 2 * pad, self.bucket), round_up(width + 2 * pad, self.bucket)

    def needs_tiling(self, height: int, width: int) -> bool:
        """Images of more than `max_pixels` pixels are stylized in tiles."""
        return height * width > self.max_pixels

    def batch_limit(self, pixels_per_image: int) -> int:
        """Images per call: `batch_size`, at most about `max_pixels` pixels in all, rounded
        down to a power of two (run_network pads batches up to one)."""
        limit = max(1, min(self.batch_size, self.max_pixels // max(pixels_per_image, 1)))
        return 1 << (limit.bit_length() - 1)

    # -- the network

    def compile(self, batch: int, bucket: tuple[int, int]) -> None:
        """Compile (or load from the compilation cache) the network for `batch` images
        (rounded up to a power of two, as `run_network` does) of one bucket shape, without
        running it: the later calls of that shape find the program compiled. A service's
        warm-up does this: running the network instead costs as much again on CPU."""
        count = 1 << (max(batch, 1) - 1).bit_length()  # pad_batch's size
        shape = (count, *bucket, 3)
        self.compiled_shapes.add(shape)
        images = jax.ShapeDtypeStruct(shape, jnp.float32)
        boxes = jax.ShapeDtypeStruct((count, 4), jnp.int32)
        _forward.lower(
            self.graphdef, self.state, images, boxes, None, self._style_input(count)
        ).compile()

    def run_network(
        self,
        batch: np.ndarray,
        boxes: np.ndarray | None = None,
        statistics: NormStatistics | None = None,
    ) -> tuple[np.ndarray, NormStatistics]:
        """(N, H, W, 3) arrays (H, W multiples of 4) -> (float32 (N, H, W, 3), the moments
        each norm layer used, each (N, 1, 1, C)). N is padded up to a power of two
        (repeating the last image) so few batch sizes ever get compiled.

        boxes: (N, 4) int32 (top, bottom, left, right) of each image's network input
        (default: the whole array). statistics: per norm layer the moments to normalise
        every image with (tiles), instead of measuring each image's own.
        """
        n, height, width = batch.shape[:3]
        if boxes is None:
            boxes = np.tile(np.array([0, height, 0, width], np.int32), (n, 1))
        batch, boxes = pad_batch(batch), pad_batch(boxes)
        self.compiled_shapes.add(batch.shape)
        images = jnp.asarray(batch, dtype=jnp.float32)
        style = self._style_input(len(batch))
        output, used = _forward(
            self.graphdef, self.state, images, jnp.asarray(boxes), statistics, style
        )
        return np.asarray(output)[:n], [(np.asarray(m)[:n], np.asarray(v)[:n]) for m, v in used]

    def norm_statistics(self, image: np.ndarray, pad: int) -> NormStatistics:
        """Per norm layer, the (1, 1, 1, C) moments of one uint8 image with a `pad` border,
        as its own (untiled) stylization measures them."""
        stack, boxes, _ = self._lay_out([image], pad)
        return self.run_network(stack, boxes)[1]

    def image_statistics(self, image: np.ndarray) -> NormStatistics:
        """The whole-image moments the tiles of a large image are normalised with, by
        `tile_statistics` (`tiling.image_statistics`)."""
        return tiling.image_statistics(self, image)

    # -- tiling's TilingEngine

    def tile_outputs(
        self, tiles: np.ndarray, boxes: np.ndarray, statistics: NormStatistics
    ) -> np.ndarray:
        """uint8 tile arrays (N, H, W, 3), their (N, 4) boxes -> float32 (N, H, W, 3), every
        tile normalised with `statistics`."""
        return self.run_network(tiles, boxes, statistics)[0]

    def tile_summaries(
        self,
        tiles: np.ndarray,
        boxes: np.ndarray,
        interiors: np.ndarray,
        layer: int,
        given: NormStatistics,
    ) -> Summary:
        """Per tile, (count, mean, squared deviations) of norm layer `layer`'s input over
        its interior, the layers before it normalised with `given` (`_layer_summary`)."""
        n = len(tiles)  # the batch padding repeats the last tile: left out of the results
        batch = pad_batch(tiles)
        count, mean, squares = _layer_summary(
            self.graphdef,
            self.state,
            jnp.asarray(batch, jnp.float32),
            jnp.asarray(pad_batch(boxes)),
            jnp.asarray(pad_batch(interiors)),
            layer,
            given,
            self._style_input(len(batch)),
        )
        return np.asarray(count)[:n], np.asarray(mean)[:n], np.asarray(squares)[:n]

    def _lay_out(
        self, images: Sequence[np.ndarray], pad: int
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """Images of one bucket shape as the network runs them: (the stack, each image's
        box, each image's (top, left) offset inside its network input)."""
        bucket_h, bucket_w = self.bucket_shape(*images[0].shape[:2], pad)
        stack = np.zeros((len(images), bucket_h, bucket_w, 3), np.uint8)
        boxes = np.zeros((len(images), 4), np.int32)
        offsets = []
        for index, image in enumerate(images):
            laid_out, offset = network_input(image, pad)
            stack[index, : laid_out.shape[0], : laid_out.shape[1]] = laid_out
            boxes[index] = (0, laid_out.shape[0], 0, laid_out.shape[1])
            offsets.append(offset)
        return stack, boxes, offsets

    def _stylize_bucket(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """uint8 (H_i, W_i, 3) images of one bucket shape -> float32 stylized (H_i, W_i, 3),
        unclamped: their network inputs run together, each output cropped to its image."""
        stack, boxes, offsets = self._lay_out(images, self.pad)
        limit = self.batch_limit(stack.shape[1] * stack.shape[2])
        outputs = []
        for start in range(0, len(images), limit):
            outputs.extend(self.run_network(stack[start : start + limit], boxes[start:][:limit])[0])
        return [
            output[top : top + image.shape[0], left : left + image.shape[1]]
            for output, image, (top, left) in zip(outputs, images, offsets, strict=True)
        ]


def _finish(stylized: np.ndarray, original: np.ndarray, preserve_color: bool) -> np.ndarray:
    """Float network output -> uint8, optionally with the original's colours."""
    if preserve_color:
        stylized = image_io.transfer_luminance(stylized, original)
    return image_io.to_uint8(stylized)
