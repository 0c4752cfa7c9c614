"""The stylize engine: uint8 RGB images in, stylized uint8 RGB images out.

The one forward pass every front end calls (the `stylize.py` command line, an HTTP service,
export checks). Its whole API:

    stylizer = Stylizer.from_model_file("runs/mosaic")  # or Stylizer(model, pad=40, ...)
    styled = stylizer.stylize(image)                     # (H, W, 3) uint8 -> (H, W, 3) uint8
    styled_list = stylizer.stylize_batch(images)         # [(H_i, W_i, 3) uint8] -> same
    raw = stylizer.stylize_float(image)                  # float32, 0..255 scale, unrounded

Any size is accepted. `preserve_color=True` keeps the input's colours (stylized luminance,
input chroma: `image_io.transfer_luminance`). `stylize_batch` keeps the order of its
inputs; images of one size run together, a few per network call. The result does not
depend on how images are grouped: every image is normalised with its own statistics.

Where things happen:
  * `MaskedInstanceNorm` / `with_masked_norms`: the model's instance norms, taking their
    statistics from the valid box of a bucketed image or from the whole image (tiles).
  * `_forward`: the jit-compiled network, shared by every Stylizer of one architecture.
  * `Stylizer.run_network`: one batch through `_forward`; `stylize_batch` groups, buckets
    and batches around it; images above `max_pixels` go to `tiling.stylize_tiled`.

Speed: XLA compiles the network once per input shape. Images are reflect-padded by the
model's `pad` (the article's border trick, as `transformer_net.stylize_padded` does) and
further up to a few bucket shapes (multiples of `bucket`, default 64 px), then cropped
back, so images of mixed sizes compile a handful of programs, not one per image; batch sizes
are rounded up to powers of two, again to bound the compiled shapes.

Bucketing does not shift colours: the instance norms take their statistics over the image
and its `pad` border only, not over the extra bucket padding.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnst_jax import export, image_io, runtime
from fnst_jax.stylize import tiling
from fnst_jax.stylize.arrays import reflect_pad_numpy, round_up
from fnst_jax.transformer_net import (
    INSTANCE_NORM_EPSILON,
    SIZE_MULTIPLE,
    InstanceNorm,
    TransformerNet,
)

DEFAULT_MAX_PIXELS = 2048 * 2048  # ~3 GB of activations on CPU in float32
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128
DEFAULT_BUCKET = 64
DEFAULT_BATCH_SIZE = 4

# Per norm layer (in graph order), the (2, N, 1, 1, C) float32 mean and variance.
NormStatistics = list[np.ndarray]
# (top, bottom, left, right) of the region the norms take their statistics from.
ValidBox = tuple[int, int, int, int]


class _ValidBox(nnx.Variable):
    """[top, bottom, left, right, height, width] of the real image inside the network input.

    Shared by every MaskedInstanceNorm of a model; it travels in the state (a traced
    array), so changing it does not recompile.
    """


class _NormStatistics(nnx.Variable):
    """Per image and channel (mean, variance) of a norm layer's input: (2, N, 1, 1, C)."""


class MaskedInstanceNorm(nnx.Module):
    """InstanceNorm whose statistics ignore the bucket padding, or are given from outside.

    Bucketing reflect-pads an image well beyond the article's `pad`; left alone, instance
    norm would average over that extra border and shift every pixel's colour (on random
    weights by a mean of ~12/255). Here mean and variance are taken only over the cells
    whose centre lies inside the valid box, scaled to this layer's resolution, so a
    bucketed image gets the statistics of the unbucketed one. They are kept in `measured`.

    Tiling: a tile normalised with its own statistics comes out in another tone than the
    same pixels of the whole image. With `use_given` (set by `_forward` on its private
    copy) the layer normalises with the statistics in `given` instead: those measured on
    the whole image (`tiling.image_statistics`), so every tile is normalised alike.
    """

    def __init__(self, norm: InstanceNorm, box: _ValidBox):
        self.scale = norm.scale
        self.bias = norm.bias
        self.dtype = norm.dtype
        self.box = box
        channels = norm.scale.shape[0]
        self.measured = _NormStatistics(jnp.zeros((2, 1, 1, 1, channels), jnp.float32))
        self.given = _NormStatistics(jnp.zeros((2, 1, 1, 1, channels), jnp.float32))
        self.use_given = False

    def box_statistics(self, x: jax.Array) -> jax.Array:
        """(mean, variance) over the valid box of each image: (2, N, 1, 1, C) float32."""
        box = self.box[...].astype(jnp.float32)
        rows, cols = x.shape[1], x.shape[2]
        centre_y = (jnp.arange(rows, dtype=jnp.float32) + 0.5) * (box[4] / rows)
        centre_x = (jnp.arange(cols, dtype=jnp.float32) + 0.5) * (box[5] / cols)
        valid_y = (centre_y >= box[0]) & (centre_y < box[1])
        valid_x = (centre_x >= box[2]) & (centre_x < box[3])
        mask = (valid_y[:, None] & valid_x[None, :]).astype(jnp.float32)[None, :, :, None]
        count = jnp.maximum(jnp.sum(mask), 1.0)
        x32 = x.astype(jnp.float32)
        mean = jnp.sum(x32 * mask, axis=(1, 2), keepdims=True) / count
        var = jnp.sum(jnp.square(x32 - mean) * mask, axis=(1, 2), keepdims=True) / count
        return jnp.stack([mean, var])

    # The interface of the InstanceNorm this replaces: moments, normalize, __call__.

    def moments(self, x: jax.Array, box: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(mean, variance), each (N, 1, 1, C) float32: the given statistics, or those of the
        valid box (kept in `measured`). `box`, the model's own region argument, is None on
        the engine's path (`_forward` calls the model on whole arrays)."""
        if self.use_given:
            mean, var = self.given[...]
            return mean, var
        statistics = self.box_statistics(x)
        self.measured.set_value(statistics)  # (2, N, ...): any batch size
        return statistics[0], statistics[1]

    def normalize(self, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + INSTANCE_NORM_EPSILON)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.normalize(x, *self.moments(x))


def with_masked_norms(model: TransformerNet) -> tuple[TransformerNet, _ValidBox]:
    """A copy of `model` whose instance norms take their statistics from a valid box."""
    model = nnx.clone(model)
    box = _ValidBox(jnp.zeros((6,), jnp.int32))
    norms = [path for path, node in nnx.iter_graph(model) if isinstance(node, InstanceNorm)]
    for path in norms:
        parent = model
        for key in path[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        setattr(parent, path[-1], MaskedInstanceNorm(getattr(parent, path[-1]), box))
    return model, box


def _masked_norms(model: nnx.Module) -> list[MaskedInstanceNorm]:
    """The model's masked norms, in a fixed (graph traversal) order."""
    return [node for _, node in nnx.iter_graph(model) if isinstance(node, MaskedInstanceNorm)]


@functools.partial(jax.jit, static_argnums=0)
def _forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    images: jax.Array,
    box: jax.Array,
    given: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, list[jax.Array]]:
    """The network as a pure function: (output, statistics measured in each norm layer,
    placeholders when `given`).

    given: None (each image normalised with its own valid-box statistics), or one
    (2, 1, 1, 1, C) array per norm layer, used for every image of the batch.

    Module-level and keyed on the (hashable) graph definition, so every Stylizer of the
    same architecture and dtype in a process shares the compiled programs: XLA compiles
    once per input shape, not once per model load."""
    model = nnx.merge(graphdef, state)
    norms = _masked_norms(model)
    norms[0].box[...] = box  # shared by all of them
    if given is not None:
        for norm, statistics in zip(norms, given, strict=True):
            norm.given[...] = statistics
            norm.use_given = True
    output = model(images)
    return output, [norm.measured[...] for norm in norms]


def _check_image(image: np.ndarray) -> None:
    if not (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.size > 0
    ):
        described = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got a {described}")


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
        overlap: int = DEFAULT_OVERLAP,
    ):
        """model: a TransformerNet (its dtype is the compute dtype). pad: reflection border
        the network sees around each image (the model's training pad). bucket: image sides
        are padded up to multiples of this, so mixed sizes share compiled programs.
        batch_size: images per network call. max_pixels: larger images are tiled, and a
        call holds at most about this many pixels. tile, overlap: tile side and overlap."""
        if overlap * 2 > tile:
            raise ValueError(f"overlap ({overlap}) must be at most half the tile size ({tile})")
        self.pad = max(0, int(pad))
        self.bucket = round_up(max(int(bucket), SIZE_MULTIPLE), SIZE_MULTIPLE)
        self.batch_size = max(1, int(batch_size))
        self.max_pixels = int(max_pixels)
        self.tile = round_up(int(tile), SIZE_MULTIPLE)
        self.overlap = int(overlap)
        masked, _ = with_masked_norms(model)
        self._graphdef, self._state = nnx.split(masked)
        self.compiled_shapes: set[tuple[int, ...]] = set()

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
        raises its ModelFileError). pad: default the model's training pad from its
        metadata, else 0. options: the other keyword arguments of `Stylizer`."""
        model, metadata = export.load_model(path, runtime.dtype_from_name(dtype))
        if pad is None:
            pad = int(metadata.get("pad") or 0)
        return cls(model, pad=pad, **options)

    # -- the API

    def stylize(self, image: np.ndarray, *, preserve_color: bool = False) -> np.ndarray:
        """One uint8 (H, W, 3) RGB image of any size -> the stylized uint8 (H, W, 3)."""
        return _finish(self.stylize_float(image), image, preserve_color)

    def stylize_batch(
        self, images: Sequence[np.ndarray], *, preserve_color: bool = False
    ) -> list[np.ndarray]:
        """uint8 (H, W, 3) RGB images of any sizes -> stylized uint8 images, in order.

        Images of the same size share network calls (up to `batch_size` at a time); images
        above `max_pixels` are tiled one by one.
        """
        for image in images:
            _check_image(image)
        results: list[np.ndarray | None] = [None] * len(images)
        same_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if self.needs_tiling(*image.shape[:2]):
                results[index] = self.stylize(image, preserve_color=preserve_color)
            else:
                same_size.setdefault(image.shape[:2], []).append(index)
        for indices in same_size.values():
            outputs = self._stylize_same_size([images[i] for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                results[index] = _finish(output, images[index], preserve_color)
        return results

    def stylize_float(self, image: np.ndarray) -> np.ndarray:
        """One uint8 (H, W, 3) image -> float32 (H, W, 3) on the 0..255 scale, unclamped and
        unrounded (for measurements; `stylize` rounds it)."""
        _check_image(image)
        if self.needs_tiling(*image.shape[:2]):
            return tiling.stylize_tiled(self, image)
        return self._stylize_same_size([image])[0]

    # -- shapes

    def bucket_shape(self, height: int, width: int, pad: int | None = None) -> tuple[int, int]:
        """Network input shape for an image: padded by `pad` (default: the Stylizer's),
        rounded up to the bucket."""
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

    def _run(
        self,
        batch: np.ndarray,
        valid: ValidBox | None,
        statistics: NormStatistics | None,
    ) -> tuple[np.ndarray, NormStatistics]:
        """`_forward` on a batch padded up to a power of two (repeating the last image):
        (outputs, per norm layer the (2, N, 1, 1, C) statistics measured in `valid`)."""
        n, height, width = batch.shape[:3]
        top, bottom, left, right = valid if valid is not None else (0, height, 0, width)
        box = np.array([top, bottom, left, right, height, width], np.int32)
        padded_n = 1 << (n - 1).bit_length()
        if padded_n != n:
            batch = np.concatenate([batch, np.repeat(batch[-1:], padded_n - n, axis=0)])
        self.compiled_shapes.add(batch.shape)
        images = jnp.asarray(batch, dtype=jnp.float32)
        output, measured = _forward(self._graphdef, self._state, images, box, statistics)
        return np.asarray(output)[:n], [np.asarray(m)[:, :n] for m in measured]

    def run_network(
        self,
        batch: np.ndarray,
        valid: ValidBox | None = None,
        statistics: NormStatistics | None = None,
    ) -> np.ndarray:
        """(N, H, W, 3) -> float32 (N, H, W, 3). N is padded up to a power of two
        (repeating the last image) so few batch sizes ever get compiled.

        valid: (top, bottom, left, right) of the region instance norm takes its statistics
        from (default: everything). statistics: instead, the (2, 1, 1, 1, C) statistics
        each norm layer uses for every image (as `image_statistics` returns them).
        """
        return self._run(batch, valid, statistics)[0]

    def norm_statistics(self, image: np.ndarray, pad: int) -> NormStatistics:
        """Per norm layer, the (2, 1, 1, 1, C) statistics of one uint8 image with a `pad`
        border, as its own stylization measures them."""
        stack, valid, _ = self._bucketed(image[None], pad)
        return self._run(stack, valid, None)[1]

    def image_statistics(self, image: np.ndarray) -> NormStatistics:
        """The whole image's statistics every tile of it is normalised with
        (`tiling.image_statistics`)."""
        return tiling.image_statistics(self, image)

    def _bucketed(
        self, images: np.ndarray, pad: int
    ) -> tuple[np.ndarray, ValidBox, tuple[int, int]]:
        """Reflect-pad same-size (N, H, W, 3) images by `pad`, and further up to their
        bucket shape: (stack, valid box, (top, left) of the images in it)."""
        height, width = images.shape[1:3]
        bucket_h, bucket_w = self.bucket_shape(height, width, pad)
        extra_h, extra_w = bucket_h - height, bucket_w - width
        # The `pad` border, then about half the rest, rounded so that the padded image
        # starts on the network's stride grid as in stylize_padded (see tiling.py).
        top = pad + (extra_h - 2 * pad) // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE
        left = pad + (extra_w - 2 * pad) // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE
        stack = reflect_pad_numpy(images, top, extra_h - top, left, extra_w - left)
        # Statistics from the image plus its `pad` border, as stylize_padded would see.
        valid = (top - pad, top + height + pad, left - pad, left + width + pad)
        return stack, valid, (top, left)

    def _stylize_same_size(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Same-size uint8 (H, W, 3) images -> float32 stylized (H, W, 3), unclamped.

        Each image is reflect-padded by `pad` (the article's trick, as in
        transformer_net.stylize_padded) and further up to its bucket shape; the output is
        cropped back to the image.
        """
        height, width = images[0].shape[:2]
        stack, valid, (top, left) = self._bucketed(np.stack(images), self.pad)
        outputs = []
        limit = self.batch_limit(stack.shape[1] * stack.shape[2])
        for start in range(0, len(images), limit):
            result = self.run_network(stack[start : start + limit], valid)
            outputs.extend(result[:, top : top + height, left : left + width])
        return outputs


def _finish(stylized: np.ndarray, original: np.ndarray, preserve_color: bool) -> np.ndarray:
    """Float network output -> uint8, optionally with the original's colours."""
    if preserve_color:
        stylized = image_io.transfer_luminance(stylized, original)
    return image_io.to_uint8(stylized)
