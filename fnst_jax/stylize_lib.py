"""Stylize images, folders and videos with an exported TransformerNet.

Where things happen:
  * `Stylizer` owns the jit-compiled network and turns uint8 RGB arrays into stylized
    float32 arrays: reflection padding (the article's border trick), bucketing, batching,
    and tiling of images too large to run whole.
  * `plan_jobs` turns the command-line inputs (files, folders, globs) into (source,
    destination) jobs, deciding up front what is skipped or refused.
  * `run_images` / `run_video` drive the decode -> stylize -> encode pipeline.
  * `main(argv)` parses flags (its own absl FlagValues, so tests can call it in-process
    repeatedly) and returns the exit status: 0 all done (skips included), 1 some input
    failed, 2 bad usage or unusable model, 130 interrupted.

Speed: XLA compiles the network once per input shape. Images are reflect-padded up to a
few bucket shapes (multiples of `bucket`, default 64 px) and cropped back, so a folder of
mixed sizes compiles a handful of programs, not one per image; images that share a bucket
are batched (batch sizes rounded up to powers of two, again to bound the compiled shapes);
decoding, resizing and encoding run in a thread pool while the network computes.

Large images: above `max_pixels` the image is cut into overlapping tiles (each tile sees
real neighbouring pixels, reflection only at the true image border), stylized a batch of
tiles at a time, and blended into float32 output and weight arrays of the image's size
with a smooth weight that falls to zero a little before each interior tile edge, so the
tile borders (where the network sees an artificial edge) never show. Every tile is
normalised with the whole image's instance-norm statistics (estimated on a copy shrunk to
`max_pixels`), not its own, and tiles sit on the network's stride-4 grid of the whole image,
so tiles agree in tone with each other and closely with an untiled run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import glob
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx

from fnst_jax import image_io, video
from fnst_jax.transformer_net import (
    INSTANCE_NORM_EPSILON,
    SIZE_MULTIPLE,
    InstanceNorm,
    TransformerNet,
)

# Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DEFAULT_MAX_PIXELS = 2048 * 2048  # ~3 GB of activations on CPU in float32
DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128
DEFAULT_BUCKET = 64

# RGB <-> YCbCr (ITU-R BT.601, full range as in JPEG). Offsets cancel out in the transfer.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    np.float32,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR).astype(np.float32)


# ----------------------------------------------------------------------------- numerics


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def reflect_pad(images: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Reflection padding of (..., H, W, C) arrays; pads larger than the image reflect again."""
    if top == bottom == left == right == 0:
        return images
    widths = [(0, 0)] * (images.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    # numpy cannot reflect an axis of length 1; repeating the single row is the limit case.
    mode = "reflect" if min(images.shape[-3], images.shape[-2]) > 1 else "edge"
    return np.pad(images, widths, mode=mode)


def transfer_luminance(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Stylized luminance (Y) with the original's chroma (Cb, Cr): keeps the input colours."""
    y = stylized.astype(np.float32) @ _RGB_TO_YCBCR[0]
    chroma = original.astype(np.float32) @ _RGB_TO_YCBCR[1:].T
    ycbcr = np.concatenate([y[..., None], chroma], axis=-1)
    return ycbcr @ _YCBCR_TO_RGB.T


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _edge_ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weight of a tile: 1 inside, smoothly 0 near interior edges.

    The first quarter of the overlap next to an interior edge gets (almost) no weight, the
    next half rises with a smoothstep: a neighbouring tile covers that band at full weight,
    so every pixel keeps a positive total weight while no tile's edge shows.
    """
    weight = np.ones(length, np.float32)
    if overlap <= 0:
        return weight
    margin = overlap // 4
    rise = max(overlap - 2 * margin, 1)
    distance = np.arange(length, dtype=np.float32) + 0.5
    ramp = np.clip((distance - margin) / rise, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    ramp = np.maximum(ramp, 1e-4)  # never exactly 0: a lone tile still defines the pixel
    if ramp_start:
        weight = np.minimum(weight, ramp)
    if ramp_end:
        weight = np.minimum(weight, ramp[::-1])
    return weight


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with >= `overlap` overlap,
    all multiples of `multiple` when `length` and `tile` are."""
    if length <= tile:
        return [0]
    step = max((tile - overlap) // multiple * multiple, multiple)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


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
    the whole image (see `Stylizer.image_statistics`), so every tile is normalised alike.
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

    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.use_given:
            self.measured.set_value(self.box_statistics(x))  # (2, N, ...): any batch size
        mean, var = self.given[...] if self.use_given else self.measured[...]
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + INSTANCE_NORM_EPSILON)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


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
def _forward(graphdef, state, images, box, given=None):
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


class Stylizer:
    """The compiled network plus the padding, bucketing, batching and tiling around it."""

    def __init__(
        self,
        model: Any,
        *,
        pad: int = 0,
        bucket: int = DEFAULT_BUCKET,
        batch_size: int = 4,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
    ):
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

    # -- running the network

    def _run(self, batch: np.ndarray, valid, statistics):
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
        valid: tuple[int, int, int, int] | None = None,
        statistics: Sequence[np.ndarray] | None = None,
    ) -> np.ndarray:
        """(N, H, W, 3) -> float32 (N, H, W, 3). N is padded up to a power of two
        (repeating the last image) so few batch sizes ever get compiled.

        valid: (top, bottom, left, right) of the region instance norm takes its statistics
        from (default: everything). statistics: instead, the (2, 1, 1, 1, C) statistics
        each norm layer uses for every image (as `image_statistics` returns them).
        """
        return self._run(batch, valid, statistics)[0]

    def _bucketed(self, images: np.ndarray, pad: int):
        """Reflect-pad same-size (N, H, W, 3) images by `pad`, and further up to their
        bucket shape: (stack, valid box, (top, left) of the images in it)."""
        height, width = images.shape[1:3]
        bucket_h, bucket_w = self.bucket_shape(height, width, pad)
        extra_h, extra_w = bucket_h - height, bucket_w - width
        # The `pad` border, then about half the rest, rounded so that the padded image
        # starts on the network's stride grid as in stylize_padded (see stylize_tiled).
        top = pad + (extra_h - 2 * pad) // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE
        left = pad + (extra_w - 2 * pad) // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE
        stack = reflect_pad(images, top, extra_h - top, left, extra_w - left)
        # Statistics from the image plus its `pad` border, as stylize_padded would see.
        valid = (top - pad, top + height + pad, left - pad, left + width + pad)
        return stack, valid, (top, left)

    def stylize_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
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

    # -- tiling

    def image_statistics(self, image: np.ndarray) -> list[np.ndarray]:
        """Per norm layer, the (2, 1, 1, 1, C) mean and variance of the whole uint8 (H, W, 3)
        image (plus its `pad` border), measured on a copy shrunk to fit `max_pixels`.

        An approximation whatever the image size costs at most one network call of
        `max_pixels`: a shrunk image's features have somewhat other statistics (on a random
        net, variances ~10-30% lower at 0.65x), but these belong together, and tiles
        normalised with them come out much closer to the untiled result than with their
        own (see tests/test_stylize.py). Exact statistics would take one full pass over the
        tiles per norm layer (each layer's depends on all before it); mixing exact
        statistics of early layers with shrunk ones of later layers is worse than either.
        """
        height, width = image.shape[:2]
        pad = self.pad
        scale = min(1.0, (self.max_pixels / ((height + 2 * pad) * (width + 2 * pad))) ** 0.5)
        # The largest scale whose bucket fits (bucket rounding adds a little; one bucket
        # is the least there is).
        budget = max(self.max_pixels, self.bucket * self.bucket)
        while True:
            small_h, small_w = max(1, round(height * scale)), max(1, round(width * scale))
            small_pad = round(pad * scale)
            bucket_h, bucket_w = self.bucket_shape(small_h, small_w, small_pad)
            if bucket_h * bucket_w <= budget or min(small_h, small_w) == 1:
                break
            scale *= 0.97
        small = resize(image, None, (small_w, small_h))[0]
        stack, valid, _ = self._bucketed(small[None], small_pad)
        return self._run(stack, valid, None)[1]

    def stylize_tiled(self, image: np.ndarray) -> np.ndarray:
        """One large uint8 (H, W, 3) image -> float32 (H, W, 3), in overlapping tiles.

        Every tile is normalised with the whole image's statistics (`image_statistics`),
        not its own, which would shift the tone tile by tile.

        The network downsamples by 4 (two stride-2 convs) and is not shift-invariant at
        finer offsets: a tile must sit on the stride grid of the whole padded image, as in
        stylize_padded, or it comes out visibly different (on a random net, a 2-px offset
        changes pixels by ~11/255 on average). So the image is padded by `pad` and then at
        the bottom/right to a multiple of 4, as the network itself does, and tiles
        (multiples of 4) start at multiples of 4.

        Memory: the padded uint8 input, float32 output and weight arrays of the image
        size, and one batch of tiles; never the whole image through the network.
        """
        statistics = self.image_statistics(image)
        height, width = image.shape[:2]
        p = self.pad
        padded = reflect_pad(image, p, p, p, p)
        padded = reflect_pad(
            padded, 0, -padded.shape[0] % SIZE_MULTIPLE, 0, -padded.shape[1] % SIZE_MULTIPLE
        )
        padded_h, padded_w = padded.shape[:2]
        tile_h, tile_w = min(self.tile, padded_h), min(self.tile, padded_w)
        overlap = self.overlap
        output = np.zeros((height, width, 3), np.float32)
        weight_sum = np.zeros((height, width), np.float32)
        boxes = [
            (y, x)
            for y in tile_starts(padded_h, tile_h, overlap, SIZE_MULTIPLE)
            for x in tile_starts(padded_w, tile_w, overlap, SIZE_MULTIPLE)
        ]
        limit = self.batch_limit(tile_h * tile_w)
        for start in range(0, len(boxes), limit):
            group = boxes[start : start + limit]
            tiles = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in group])
            results = self.run_network(tiles, statistics=statistics)
            for (y, x), result in zip(group, results, strict=True):
                weight_y = _edge_ramp(tile_h, overlap, y > 0, y + tile_h < padded_h)
                weight_x = _edge_ramp(tile_w, overlap, x > 0, x + tile_w < padded_w)
                # The part of the tile inside the image (the padding is cropped off).
                y0, y1 = max(y, p), min(y + tile_h, p + height)
                x0, x1 = max(x, p), min(x + tile_w, p + width)
                weight = np.outer(weight_y[y0 - y : y1 - y], weight_x[x0 - x : x1 - x])
                region = (slice(y0 - p, y1 - p), slice(x0 - p, x1 - p))
                output[region] += result[y0 - y : y1 - y, x0 - x : x1 - x] * weight[..., None]
                weight_sum[region] += weight
        output /= weight_sum[..., None]
        return output

    def stylize(self, image: np.ndarray) -> np.ndarray:
        """One uint8 image of any size -> float32, tiled when above `max_pixels`."""
        if self.needs_tiling(*image.shape[:2]):
            return self.stylize_tiled(image)
        return self.stylize_batch([image])[0]


# ----------------------------------------------------------------------------- options


@dataclasses.dataclass
class Options:
    """Everything but the network that decides how inputs become outputs."""

    size: int | None = None
    scale: float | None = None
    preserve_color: bool = False
    format: str | None = None  # None: the input's own format if jpg/png/webp, else png
    quality: int = 95
    overwrite: bool = False
    quiet: bool = False
    suffix: str = ""
    workers: int = 2


def target_size(width: int, height: int, options: Options) -> tuple[int, int]:
    """(width, height) after --size (longest side) or --scale."""
    if options.size:
        factor = options.size / max(width, height)
    elif options.scale:
        factor = options.scale
    else:
        return width, height
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize(rgb: np.ndarray, alpha: np.ndarray | None, size: tuple[int, int]):
    """Lanczos resize of RGB (and alpha) to (width, height); a no-op at the same size."""
    from PIL import Image

    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb, alpha
    rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3))
    if alpha is not None:
        alpha = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.LANCZOS))
    return rgb, alpha


def finish(stylized: np.ndarray, original: np.ndarray, options: Options) -> np.ndarray:
    """Float network output -> uint8, optionally with the original's colours."""
    if options.preserve_color:
        stylized = transfer_luminance(stylized, original)
    return to_uint8(stylized)


# ----------------------------------------------------------------------------- reporting


class Reporter:
    """Progress and messages: tqdm on a TTY, plain lines otherwise, errors always."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.failed, self.skipped = 0, 0, 0
        self.skip_reasons: dict[str, int] = {}
        self._bars: list[Any] = []

    def _print(self, message: str) -> None:
        if self._bars:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if not self.quiet and not self.interactive:
            self._print(message)

    def error(self, path: str | os.PathLike, reason: str) -> None:
        self.failed += 1
        reason = reason.removeprefix(f"{path}: ")
        self._print(f"error: {path}: {reason}")

    def skip(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.skipped += 1
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
        if not self.quiet:
            self._print(f"skipped: {path}: {reason}{detail}")

    def success(self, source: Path, destination: Path, seconds: float | None = None) -> None:
        self.done += 1
        timing = f" ({seconds:.2f} s)" if seconds is not None else ""
        self.info(f"{source} -> {destination}{timing}")

    def bar(self, total: int | None, unit: str, description: str):
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit=unit,
            desc=description,
            disable=not self.interactive,
            file=self.stream,
            leave=False,
            dynamic_ncols=True,
        )
        self._bars.append(bar)
        return bar

    def close_bar(self, bar) -> None:
        bar.close()
        if bar in self._bars:
            self._bars.remove(bar)

    def summary(self, total: int, seconds: float) -> str:
        parts = []
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            reasons = ", ".join(f"{k}" for k in self.skip_reasons)
            parts.append(f"{self.skipped} skipped: {reasons}")
        details = f" ({', '.join(parts)})" if parts else ""
        return f"stylized {self.done} of {total} inputs{details} in {seconds:.1f} s"


# ----------------------------------------------------------------------------- planning


@dataclasses.dataclass
class Job:
    source: Path
    destination: Path
    kind: str  # "image" or "video"


def _has_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def _glob_base(pattern: str) -> Path:
    """The leading part of a glob pattern without wildcards: outputs are relative to it."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _has_glob(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _supported(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in image_io.IMAGE_EXTENSIONS or suffix in video.VIDEO_EXTENSIONS


def _walk(folder: Path, exclude: Path | None) -> Iterator[Path]:
    """Supported files under `folder`, sorted, skipping hidden names and the output folder."""
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude)
        )
        for name in sorted(files):
            path = root_path / name
            if not name.startswith(".") and _supported(path):
                yield path


def expand_inputs(
    inputs: Sequence[str], reporter: Reporter, exclude: Path | None = None
) -> list[tuple[Path, Path]]:
    """Command-line inputs -> (file, path relative to its root) pairs; errors reported."""
    found: list[tuple[Path, Path]] = []
    for argument in inputs:
        path = Path(argument)
        if path.is_dir():
            files = [(f, f.relative_to(path)) for f in _walk(path, exclude)]
            if not files:
                reporter.error(path, "folder holds no supported images or videos")
            found.extend(files)
        elif path.is_file():
            if not _supported(path):
                reporter.error(
                    path,
                    f"unsupported format {path.suffix or '(no extension)'!r} (images: "
                    f"{', '.join(sorted(image_io.IMAGE_EXTENSIONS))}; videos: "
                    f"{', '.join(sorted(video.VIDEO_EXTENSIONS))})",
                )
            else:
                found.append((path, Path(path.name)))
        elif _has_glob(argument):
            base = _glob_base(argument)
            matches: list[tuple[Path, Path]] = []
            for match in sorted(glob.glob(argument, recursive=True)):
                match_path = Path(match)
                if match_path.is_dir():
                    matches.extend((f, f.relative_to(base)) for f in _walk(match_path, exclude))
                elif _supported(match_path) and not match_path.name.startswith("."):
                    matches.append((match_path, match_path.relative_to(base)))
            if not matches:
                reporter.error(argument, "no supported images or videos match this pattern")
            found.extend(matches)
        else:
            reporter.error(path, "no such file or directory")
    return found


def output_extension(source: Path, options: Options) -> str:
    if video.VIDEO_EXTENSIONS.__contains__(source.suffix.lower()):
        return source.suffix.lower()
    if options.format:
        return image_io.OUTPUT_FORMATS[options.format][1]
    own = image_io.EXTENSION_TO_FORMAT.get(source.suffix.lower())
    return image_io.OUTPUT_FORMATS[own or "png"][1]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def plan_jobs(
    found: Sequence[tuple[Path, Path]],
    output: Path,
    single_file: bool,
    options: Options,
    reporter: Reporter,
) -> list[Job]:
    """Decide each input's output; refuse collisions and inputs, skip existing outputs."""
    input_paths = {f.resolve() for f, _ in found}
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for source, relative in found:
        kind = "video" if source.suffix.lower() in video.VIDEO_EXTENSIONS else "image"
        if single_file:
            destination = output
        else:
            name = f"{relative.stem}{options.suffix}{output_extension(source, options)}"
            destination = output / relative.parent / name
        resolved = destination.resolve()
        if resolved in input_paths or _same_file(source, destination):
            reporter.error(source, f"refusing to write {destination}: it is an input file")
            continue
        if resolved in claimed:
            reporter.error(
                source,
                f"its output {destination} would also be written for {claimed[resolved]}; "
                "stylize these inputs in separate runs or with different --output",
            )
            continue
        claimed[resolved] = source
        if destination.exists() and not options.overwrite:
            reporter.skip(source, "exists", f" ({destination}; use --overwrite to replace it)")
            continue
        jobs.append(Job(source, destination, kind))
    return jobs


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass
class _Prepared:
    job: Job
    rgb: np.ndarray
    alpha: np.ndarray | None
    icc_profile: bytes | None
    format: str
    started: float


def _prepare(job: Job, options: Options) -> _Prepared:
    """Decode and resize (runs in a worker thread)."""
    started = time.perf_counter()
    decoded = image_io.read_image(job.source)
    size = target_size(decoded.rgb.shape[1], decoded.rgb.shape[0], options)
    rgb, alpha = resize(decoded.rgb, decoded.alpha, size)
    format = image_io.EXTENSION_TO_FORMAT[job.destination.suffix.lower()]
    return _Prepared(job, rgb, alpha, decoded.icc_profile, format, started)


def _encode(item: _Prepared, stylized: np.ndarray, options: Options) -> Path:
    """Finish and write one image (runs in a worker thread)."""
    result = finish(stylized, item.rgb, options)
    return image_io.write_image(
        item.job.destination,
        result,
        item.alpha,
        format=item.format,
        quality=options.quality,
        icc_profile=item.icc_profile,
    )


def run_images(
    jobs: Sequence[Job], stylizer: Stylizer, options: Options, reporter: Reporter
) -> None:
    """Decode (prefetched), stylize (bucketed and batched), encode (in the background)."""
    if not jobs:
        return
    bar = reporter.bar(len(jobs), "img", "images")
    prefetch = max(2, 2 * stylizer.batch_size)
    with concurrent.futures.ThreadPoolExecutor(max_workers=options.workers) as pool:
        decoding: deque = deque()
        encoding: deque = deque()
        pending: dict[tuple[int, int, int, int], list[_Prepared]] = {}
        queued = iter(jobs)

        def collect_encodes(keep: int) -> None:
            while len(encoding) > keep:
                item, future = encoding.popleft()
                try:
                    future.result()
                except Exception as e:  # an encoder error must not stop the other inputs
                    reporter.error(item.job.source, f"cannot write {item.job.destination} ({e})")
                else:
                    reporter.success(
                        item.job.source,
                        item.job.destination,
                        time.perf_counter() - item.started,
                    )
                bar.update(1)

        def submit_encodes(items: Sequence[_Prepared], results: Sequence[np.ndarray]) -> None:
            for item, result in zip(items, results, strict=True):
                encoding.append((item, pool.submit(_encode, item, result, options)))
            collect_encodes(keep=prefetch)

        def run_group(key) -> None:
            items = pending.pop(key)
            try:
                results = stylizer.stylize_batch([item.rgb for item in items])
            except Exception as e:  # e.g. out of memory: report, keep going
                for item in items:
                    reporter.error(item.job.source, f"stylization failed ({e})")
                    bar.update(1)
                return
            submit_encodes(items, results)

        def fill() -> None:
            while len(decoding) < prefetch:
                job = next(queued, None)
                if job is None:
                    return
                decoding.append((job, pool.submit(_prepare, job, options)))

        fill()
        while decoding:
            job, future = decoding.popleft()
            fill()
            try:
                item = future.result()
            except image_io.ImageReadError as e:
                reporter.error(job.source, str(e))
                bar.update(1)
                continue
            except Exception as e:
                reporter.error(job.source, f"cannot read image ({type(e).__name__}: {e})")
                bar.update(1)
                continue
            height, width = item.rgb.shape[:2]
            if stylizer.needs_tiling(height, width):
                try:
                    result = stylizer.stylize_tiled(item.rgb)
                except Exception as e:
                    reporter.error(job.source, f"stylization failed ({e})")
                    bar.update(1)
                    continue
                submit_encodes([item], [result])
                continue
            # Group by bucket shape, and keep images of different sizes apart within it:
            # the same-size images of one group are padded and cropped identically.
            key = (*stylizer.bucket_shape(height, width), height, width)
            pending.setdefault(key, []).append(item)
            limit = stylizer.batch_limit(key[0] * key[1])
            if len(pending[key]) >= limit:
                run_group(key)
            elif sum(len(group) for group in pending.values()) > prefetch:
                run_group(max(pending, key=lambda k: len(pending[k])))
        for key in list(pending):
            run_group(key)
        collect_encodes(keep=0)
    reporter.close_bar(bar)


def _batched(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_video(job: Job, stylizer: Stylizer, options: Options, reporter: Reporter) -> None:
    """Stream one video through the network; the output keeps its timing and audio."""
    started = time.perf_counter()
    try:
        info, frames = video.read_video(job.source)
    except video.VideoReadError as e:
        reporter.error(job.source, str(e))
        return
    width, height = target_size(*info.size, options)
    bucket_h, bucket_w = stylizer.bucket_shape(height, width)
    tiled = stylizer.needs_tiling(height, width)
    batch = 1 if tiled else stylizer.batch_limit(bucket_h * bucket_w)
    bar = reporter.bar(info.num_frames, "frame", job.source.name)

    def stylized_frames() -> Iterator[np.ndarray]:
        for group in _batched(frames, batch):
            group = [resize(frame, None, (width, height))[0] for frame in group]
            if tiled:
                results = [stylizer.stylize_tiled(frame) for frame in group]
            else:
                results = stylizer.stylize_batch(group)
            for frame, result in zip(group, results, strict=True):
                yield finish(result, frame, options)
            bar.update(len(group))

    try:
        count = video.write_video(
            job.destination,
            stylized_frames(),
            info,
            audio_from=job.source if info.has_audio else None,
            quality=options.quality,
        )
    except video.VideoReadError as e:
        reporter.error(job.source, str(e))
    except (OSError, RuntimeError, ValueError) as e:
        reporter.error(job.source, f"cannot write video {job.destination} ({e})")
    else:
        seconds = time.perf_counter() - started
        reporter.success(job.source, job.destination, seconds)
        reporter.info(f"  {count} frames, {count / max(seconds, 1e-9):.2f} frames/s")
    finally:
        reporter.close_bar(bar)


# ----------------------------------------------------------------------------- CLI

USAGE = """\
Stylize images, folders and videos with a trained fast-neural-style model.

usage: python stylize.py --model MODEL --output OUT [options] INPUT [INPUT ...]

  MODEL  a training workdir (uses WORKDIR/model.npz) or an exported model .npz file
  INPUT  image files, folders (searched recursively), quoted globs ('photos/**/*.jpg'),
         videos (mp4, mov, m4v, mkv, webm) and GIFs
  OUT    a folder (created if needed): each output keeps its input's name and subfolders
         relative to the folder or glob it was found under, plus _MODELNAME (or --suffix);
         or a file name (photo.png, clip.mp4) when there is exactly one input

examples:
  python stylize.py --model runs/candy --output out photo.jpg holiday/
  python stylize.py --model candy.npz --output small.png --size 512 photo.jpg
  python stylize.py --model candy.npz --output out --max-pixels 4000000 --tile 1024 huge.tif
  python stylize.py --model candy.npz --output out --preserve-color clip.mp4

Images keep their size (or --size / --scale), EXIF orientation and ICC profile; alpha is
kept in png/webp outputs and dropped in jpg. Existing outputs are skipped unless
--overwrite; inputs are never overwritten. Exit status: 0 done, 1 some inputs failed,
2 bad usage or model, 130 interrupted.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command line, on a given FlagValues so main() can be called repeatedly."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model", None, "Training workdir or exported model file.", **fv)
    flags.DEFINE_string("output", None, "Output folder, or a file when there is one input.", **fv)
    flags.DEFINE_integer("size", None, "Resize so the longest side is this many pixels.", **fv)
    flags.DEFINE_float("scale", None, "Resize by this factor (instead of --size).", **fv)
    flags.DEFINE_integer(
        "max-pixels",
        DEFAULT_MAX_PIXELS,
        "Images with more pixels than this are stylized in overlapping tiles; also caps "
        "the pixels in one batch. Lower it if you run out of memory.",
        **fv,
    )
    flags.DEFINE_integer("tile", DEFAULT_TILE, "Tile side in pixels for large images.", **fv)
    flags.DEFINE_integer(
        "overlap", DEFAULT_OVERLAP, "Overlap between tiles (blended smoothly).", **fv
    )
    flags.DEFINE_integer(
        "batch-size",
        4,
        "Same-size images or frames per network call (rounded down to a power of two, "
        "and fewer when their pixels would exceed --max-pixels).",
        **fv,
    )
    flags.DEFINE_integer(
        "bucket",
        DEFAULT_BUCKET,
        "Pad image sides up to a multiple of this (by reflection, cropped back) so mixed "
        "sizes share compiled programs. 4 = exact sizes (one compilation per size).",
        **fv,
    )
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.", **fv)
    flags.DEFINE_integer(
        "pad",
        None,
        "Reflection padding in pixels around each image (default: the model's training pad "
        "from its metadata, else 0).",
        **fv,
    )
    flags.DEFINE_boolean(
        "preserve-color",
        False,
        "Keep the input's colours: stylized luminance, input chroma (YCbCr).",
        **fv,
    )
    flags.DEFINE_enum(
        "format",
        None,
        list(image_io.OUTPUT_FORMATS),
        "Image output format (default: the input's if jpg/png/webp, else png).",
        **fv,
    )
    flags.DEFINE_integer("quality", 95, "JPEG/WebP quality 1-100 (also video quality).", **fv)
    flags.DEFINE_string(
        "suffix", None, "Appended to output names (default: _MODELNAME; '' for none).", **fv
    )
    flags.DEFINE_boolean("overwrite", False, "Replace existing outputs.", **fv)
    flags.DEFINE_boolean("quiet", False, "Only errors: no progress, no per-file lines.", **fv)
    flags.DEFINE_integer("workers", 2, "Threads for decoding and encoding.", **fv)


def model_name(model_path: str) -> str:
    """A name for output files: the workdir's name, or the model file's stem."""
    path = Path(model_path)
    if path.is_dir() or path.name == "model.npz":
        return (path if path.is_dir() else path.parent).resolve().name or "stylized"
    return path.stem


class UsageError(ValueError):
    pass


def _options_from_flags(fv: flags.FlagValues, name: str) -> Options:
    if fv["size"].value is not None and fv["scale"].value is not None:
        raise UsageError("give --size or --scale, not both")
    if fv["size"].value is not None and fv["size"].value < 1:
        raise UsageError("--size must be a positive number of pixels")
    if fv["scale"].value is not None and not fv["scale"].value > 0:
        raise UsageError("--scale must be positive")
    if not 1 <= fv["quality"].value <= 100:
        raise UsageError("--quality must be between 1 and 100")
    suffix = fv["suffix"].value
    return Options(
        size=fv["size"].value,
        scale=fv["scale"].value,
        preserve_color=fv["preserve-color"].value,
        format=fv["format"].value,
        quality=fv["quality"].value,
        overwrite=fv["overwrite"].value,
        quiet=fv["quiet"].value,
        suffix=f"_{name}" if suffix is None else suffix,
        workers=max(1, fv["workers"].value),
    )


def _check_numbers(fv: flags.FlagValues) -> None:
    if fv["max-pixels"].value < 64 * 64:
        raise UsageError("--max-pixels must be at least 4096")
    if fv["tile"].value < 32:
        raise UsageError("--tile must be at least 32")
    if not 0 <= fv["overlap"].value * 2 <= fv["tile"].value:
        raise UsageError("--overlap must be between 0 and half of --tile")
    if fv["tile"].value ** 2 > fv["max-pixels"].value * 4:
        raise UsageError("--tile is far larger than --max-pixels allows; lower --tile")
    if fv["batch-size"].value < 1:
        raise UsageError("--batch-size must be at least 1")
    if fv["bucket"].value < 1:
        raise UsageError("--bucket must be at least 1")
    if fv["pad"].value is not None and fv["pad"].value < 0:
        raise UsageError("--pad must be >= 0")


def main(argv: Sequence[str], stream=None) -> int:
    """Run the command line; returns the exit status (never raises for bad input)."""
    stream = stream if stream is not None else sys.stderr
    fv = flags.FlagValues()
    define_flags(fv)
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(USAGE + "\noptions:\n" + fv.get_help(include_special_flags=False), file=sys.stdout)
        return EXIT_OK
    try:
        positional = fv(list(argv))[1:]
    except flags.Error as e:
        print(f"error: {e}\n(see --help)", file=stream)
        return EXIT_USAGE
    started = time.perf_counter()
    try:
        if not fv["model"].value:
            raise UsageError("--model is required")
        if not fv["output"].value:
            raise UsageError("--output is required")
        if not positional:
            raise UsageError("no inputs given")
        _check_numbers(fv)
        options = _options_from_flags(fv, model_name(fv["model"].value))
        output = Path(fv["output"].value)
        output_suffix = output.suffix.lower()
        single_file = not output.is_dir() and (
            output_suffix in image_io.IMAGE_EXTENSIONS or output_suffix in video.VIDEO_EXTENSIONS
        )
    except UsageError as e:
        print(f"error: {e}", file=stream)
        return EXIT_USAGE

    reporter = Reporter(quiet=options.quiet, stream=stream)
    try:
        model, meta = _load_model(fv["model"].value, fv["dtype"].value)
    except ValueError as e:  # export.ModelFileError
        print(f"error: {e}", file=stream)
        return EXIT_USAGE

    exclude = None if single_file else output.resolve()
    found = expand_inputs(positional, reporter, exclude=exclude)
    total = len(found) + reporter.failed
    if single_file:
        problem = _single_file_problem(output, found, positional, options, fv["format"].value)
        if problem:
            print(f"error: {problem}", file=stream)
            return EXIT_USAGE
    jobs = plan_jobs(found, output, single_file, options, reporter)

    pad = fv["pad"].value if fv["pad"].value is not None else int(meta.get("pad") or 0)
    stylizer = Stylizer(
        model,
        pad=pad,
        bucket=fv["bucket"].value,
        batch_size=fv["batch-size"].value,
        max_pixels=fv["max-pixels"].value,
        tile=fv["tile"].value,
        overlap=fv["overlap"].value,
    )
    try:
        run_images([j for j in jobs if j.kind == "image"], stylizer, options, reporter)
        for job in jobs:
            if job.kind == "video":
                run_video(job, stylizer, options, reporter)
    except KeyboardInterrupt:
        print(
            "interrupted: " + reporter.summary(total, time.perf_counter() - started),
            file=stream,
        )
        return EXIT_INTERRUPTED
    if not options.quiet or reporter.failed:
        print(reporter.summary(total, time.perf_counter() - started), file=stream)
    return EXIT_FAILED if reporter.failed else EXIT_OK


def _load_model(path: str, dtype_name: str):
    import jax.numpy as jnp

    from fnst_jax import export

    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    return export.load_model(path, dtype)


def _single_file_problem(
    output: Path,
    found: Sequence[tuple[Path, Path]],
    positional: Sequence[str],
    options: Options,
    format_flag: str | None,
) -> str | None:
    """Why `--output FILE` cannot be used here, or None."""
    if len(found) != 1 or len(positional) != 1:
        return (
            f"--output {output} names a file but {len(positional)} input argument(s) "
            f"give {len(found)} files; give a folder"
        )
    source = found[0][0]
    out_suffix = output.suffix.lower()
    if (source.suffix.lower() in video.VIDEO_EXTENSIONS) != (out_suffix in video.VIDEO_EXTENSIONS):
        return f"--output {output}: cannot write {source.name} to a {out_suffix} file"
    if out_suffix in video.VIDEO_EXTENSIONS:
        return None
    fmt = image_io.EXTENSION_TO_FORMAT.get(out_suffix)
    if fmt is None:
        return (
            f"--output {output}: cannot write {out_suffix} images "
            f"(use {', '.join(sorted(image_io.EXTENSION_TO_FORMAT))})"
        )
    if format_flag and format_flag != fmt:
        return f"--format {format_flag} disagrees with --output {output}"
    return None


__all__ = [
    "Options",
    "Stylizer",
    "main",
    "transfer_luminance",
]
