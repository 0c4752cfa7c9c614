"""Stroke size: the resolution the network runs at, relative to the image it paints.

The network's strokes have a fixed size in pixels. A model trained with its style image at a
longest side of N px (`native_size`, recorded in the model file) paints the style at the
style's own proportions on an image whose longest side is N px; on a 12 MP photo the same
strokes are a faint texture. The stroke scale S sets the resolution the network runs at:

  working size = output size / S      strokes S times their trained size in output pixels
  S = 1                               the network runs at the output size (bit for bit the
                                      output without a stroke scale, before the brightness
                                      curve below)
  S = "auto" (the default)            S = longest side / `native_size`, at least 1: the
                                      network runs at its native size, so strokes are
                                      proportional to the image, and any photo looks the way
                                      the model looks at its training scale. A photo smaller
                                      than the native size runs at its own size (upsampling
                                      it first scored worse: docs/experiments/own_size.md),
                                      and a model that records no native size at S = 1.

Painting at the native size gives strokes the right size but no detail finer than the
native size's pixels: seen on a screen (a longest side of 512 px and more), a large photo
stylized that way is a blurred picture. So when the working size is smaller than the output,
the network paints once more, a detail pass (`detail`, on by default): over its own output
upsampled (bicubic) to `DETAIL_FACTOR` times the working size, at most the output size. The
second pass keeps the first's large strokes and adds the model's own texture at half their
size, which is what a screen shows (docs/experiments/own_size.md). At S <= 1 there is no
detail pass.

The network's last output is brought back to the output size by an upsampler
(`UPSAMPLERS`): "bicubic", or "guided", a guided filter (He, Sun and Tang, 2013, in its
fast, subsampled form) whose guide is the full-resolution photo, so that the photo's edges
stay sharp. Last, the output is given the photo's mean brightness (`keep_brightness`, on by
default; `fnst_jax.brightness`: the network cannot see it). `Stroke` does both ends for
every path that stylizes: stylize.py's images, folders, tiles and videos, the service,
evaluate, training's validation at the users' size. No JAX here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from fnst_jax import brightness, image_io

AUTO = "auto"
NATIVE_SIZE_KEY = "native_size"  # model metadata: the style's longest side as trained, px
UPSAMPLERS = ("bicubic", "guided")
DEFAULT_UPSAMPLER = "bicubic"
MIN_WORKING_SIDE = 16  # px: smaller working images give the network nothing to paint
MAX_UPSCALE = 8.0  # a working image at most 8x the output's side (tiny outputs, large S^-1)
DETAIL_FACTOR = 2.0  # the detail pass runs at this times the working size (at most the output's)
# The guided filter, on the working image: window radius (px) and regularisation on the
# 0..1 scale (a smaller eps follows the photo's edges more closely).
GUIDED_RADIUS = 2
GUIDED_EPS = 1e-3


class StrokeScaleError(ValueError):
    """A stroke scale that cannot be used (the message says why)."""


def parse_scale(value: str | float | None) -> float | None:
    """A stroke scale as given (a flag, a form field): "auto" or None -> None (automatic),
    else a positive finite number. StrokeScaleError otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise StrokeScaleError(f"expected 'auto' or a positive number, not {value!r}")
    return scale


def native_size(meta: Mapping[str, Any] | None) -> int | None:
    """The model's native size (px, longest side) from its metadata; None when it has none."""
    value = (meta or {}).get(NATIVE_SIZE_KEY)
    return int(value) if value else None


def style_native_size(style_sizes: list[tuple[int, int]], style_size: int | None) -> int:
    """The native size of a model trained on style images of these (width, height) sizes,
    each resized by training so that its shorter side is `style_size` (None: as it is): the
    mean of their longest sides as trained."""
    longest = []
    for width, height in style_sizes:
        scale = style_size / min(width, height) if style_size else 1.0
        longest.append(max(round(width * scale), round(height * scale)))
    return round(sum(longest) / len(longest))


@dataclasses.dataclass(frozen=True)
class Stroke:
    """How the network's output becomes what is written: the stroke scale `scale` (None:
    automatic from `native`), the model's `native` size (None: unknown), the upsampler,
    whether a working size below the output's gets a detail pass, and whether the output
    keeps the photo's brightness."""

    scale: float | None = None
    native: int | None = None
    upsampler: str = DEFAULT_UPSAMPLER
    detail: bool = True
    keep_brightness: bool = True  # the output as bright as the photo (`fnst_jax.brightness`)

    def __post_init__(self) -> None:
        if self.upsampler not in UPSAMPLERS:
            raise StrokeScaleError(
                f"upsampler {self.upsampler!r}: expected one of {', '.join(UPSAMPLERS)}"
            )

    def scale_for(self, width: int, height: int) -> float:
        """S for an output of this size."""
        if self.scale is not None:
            return self.scale
        if self.native is None:
            return 1.0
        return max(1.0, max(width, height) / self.native)

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the network runs at for an output of (width, height)."""
        scale = self.scale_for(width, height)
        if scale == 1.0:
            return width, height
        scale = max(scale, 1.0 / MAX_UPSCALE)
        size = max(1, round(width / scale)), max(1, round(height / scale))
        if min(size) < min(MIN_WORKING_SIDE, width, height):
            raise StrokeScaleError(
                f"stroke scale {scale:g} would run the network on a {size[0]}x{size[1]} image "
                f"for a {width}x{height} output; the smallest is {MIN_WORKING_SIDE} px a side"
            )
        return size

    def detail_size(self, width: int, height: int) -> tuple[int, int] | None:
        """(width, height) of the detail pass for an output of (width, height); None when
        there is none (no detail pass, or the network already runs at the output size or
        above)."""
        working = self.working_size(width, height)
        if not self.detail or max(working) >= max(width, height):
            return None
        factor = min(1.0, DETAIL_FACTOR * max(working) / max(width, height))
        return max(1, round(width * factor)), max(1, round(height * factor))

    def detail_input(self, stylized: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The detail pass's input: the first pass's uint8 output upsampled to `size`
        (`detail_size`)."""
        return image_io.resize(stylized, size, resample=Image.Resampling.BICUBIC)

    def refine(
        self,
        stylized: Sequence[np.ndarray],
        width: int,
        height: int,
        stylize: Callable[[list[np.ndarray]], list[np.ndarray]],
    ) -> list[np.ndarray]:
        """The network's uint8 outputs at the working size of (width, height) outputs, after
        the detail pass (`stylize`: the network on a list of uint8 images of one size); as
        they are when there is none."""
        size = self.detail_size(width, height)
        if size is None:
            return list(stylized)
        return stylize([self.detail_input(image, size) for image in stylized])

    def prepare(self, photo: np.ndarray) -> np.ndarray:
        """The network's input for a uint8 (H, W, 3) photo at the output size."""
        height, width = photo.shape[:2]
        return image_io.resize(photo, self.working_size(width, height))

    def finish(
        self, stylized: np.ndarray, photo: np.ndarray, *, preserve_color: bool = False
    ) -> np.ndarray:
        """The network's last uint8 output (after `refine`) -> what is written for `photo`:
        upsampled to its size (the photo guides the "guided" upsampler); with
        `preserve_color`, the photo's colours with the stylized luminance (at the same size
        the engine preserved them itself); then, with `keep_brightness`, the photo's mean
        luma (`fnst_jax.brightness`). At the same size and without `keep_brightness` it
        comes back as it is."""
        height, width = photo.shape[:2]
        if stylized.shape[:2] == (height, width):
            output = stylized
        elif self.upsampler == "guided":
            output = guided_upsample(stylized, photo)
        else:
            output = image_io.resize(stylized, (width, height), resample=Image.Resampling.BICUBIC)
        if preserve_color and output is not stylized:
            output = image_io.to_uint8(image_io.transfer_luminance(output, photo))
        if self.keep_brightness:
            output = brightness.keep(output, photo)
            if preserve_color:  # the curve moved the colours: the photo's again
                output = image_io.to_uint8(image_io.transfer_luminance(output, photo))
        return output


def _box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """The mean over a (2r+1)^2 window of a float (H, W[, C]) image, the window cut at the
    borders (each pixel divided by its own window's size)."""
    height, width = image.shape[:2]
    padded = np.zeros((height + 1, width + 1, *image.shape[2:]), np.float64)
    padded[1:, 1:] = np.cumsum(np.cumsum(image, axis=0, dtype=np.float64), axis=1)
    rows, cols = np.arange(height), np.arange(width)
    top, bottom = np.clip(rows - radius, 0, height), np.clip(rows + radius + 1, 0, height)
    left, right = np.clip(cols - radius, 0, width), np.clip(cols + radius + 1, 0, width)
    sums = (
        padded[bottom][:, right]
        - padded[top][:, right]
        - padded[bottom][:, left]
        + padded[top][:, left]
    )
    counts = np.outer(bottom - top, right - left).astype(np.float64)
    if image.ndim == 3:
        counts = counts[..., None]
    return (sums / counts).astype(np.float32)


def guided_upsample(
    stylized: np.ndarray,
    photo: np.ndarray,
    radius: int = GUIDED_RADIUS,
    eps: float = GUIDED_EPS,
) -> np.ndarray:
    """uint8 `stylized` (h, w, 3), upsampled to uint8 `photo`'s (H, W) by a fast guided
    filter: on the working grid, each output channel is fitted locally as a * luma + b of
    the photo's luma there; a and b, smoothed and upsampled (bilinear), are applied to the
    full-resolution luma. Edges the output shares with the photo come back sharp."""
    height, width = photo.shape[:2]
    small_h, small_w = stylized.shape[:2]
    guide_full = image_io.luma(photo) / 255.0
    guide = image_io.luma(image_io.resize(photo, (small_w, small_h)))[..., None] / 255.0
    target = stylized.astype(np.float32) / 255.0
    mean_guide = _box_mean(guide, radius)
    mean_target = _box_mean(target, radius)
    covariance = _box_mean(guide * target, radius) - mean_guide * mean_target
    variance = _box_mean(guide * guide, radius) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_target - a * mean_guide
    a, b = _box_mean(a, radius), _box_mean(b, radius)
    up_a = _resize_float(a, (width, height))
    up_b = _resize_float(b, (width, height))
    return image_io.to_uint8((up_a * guide_full[..., None] + up_b) * 255.0)


def _resize_float(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float32 (h, w, C) planes to `size` (width, height)."""
    return np.stack(
        [
            np.asarray(Image.fromarray(planes[..., c]).resize(size, Image.Resampling.BILINEAR))
            for c in range(planes.shape[-1])
        ],
        axis=-1,
    )
