"""Decoding and preprocessing of one content image: bytes -> uint8 RGB square.

Everything here works on a single image and is a pure function of its inputs (plus a crop seed),
so the grain pipeline can call it from any worker process and still be deterministic.
Normalisation is not done here: the pipeline stays uint8 and the VGG owns its conventions.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from fnst_jax import image_io


class BadImageError(ValueError):
    """An image that cannot be used for training: unreadable, too small, or too large.

    An internal skip signal, not a `UserError`: the pipeline catches it, skips and logs the
    file, and carries on (a source with no readable image at all raises `DataError`). One that
    escaped would be a bug in fnst_jax, so it must keep its traceback at the entry points.
    """


def to_rgb(image: Image.Image) -> Image.Image:
    """Returns `image` as 8-bit RGB (`image_io.pil_to_rgb_alpha`: palette, greyscale, CMYK,
    16-bit), with any alpha composited on white: transparent pixels' colour values are often
    arbitrary (typically black) and must not leak into the content image."""
    if image.mode == "RGB":
        return image
    rgb, alpha = image_io.pil_to_rgb_alpha(image)
    if alpha is not None:
        weight = alpha.astype(np.float32)[..., None] / 255.0
        rgb = image_io.to_uint8(rgb * weight + 255.0 * (1.0 - weight))
    return Image.fromarray(rgb, "RGB")


def decode_image(
    data: bytes, *, min_size: int, max_pixels: int, target_short_side: int | None = None
) -> Image.Image:
    """Decodes encoded image bytes to an upright 8-bit RGB PIL image.

    Args:
      data: the encoded file (JPEG, PNG, WebP, BMP, TIFF, ...).
      min_size: images whose shorter side is below this are rejected.
      max_pixels: images with more pixels than this are rejected from the header alone, before
        any pixel is decoded (decompression bombs).
      target_short_side: if given, JPEGs may be decoded at a reduced scale (DCT scaling) as long
        as the shorter side stays at least this long; a large speed-up for big photos.

    Raises:
      BadImageError: for anything that is not a usable image, with the reason.
    """
    if not data:
        raise BadImageError("empty file")
    try:
        with warnings.catch_warnings():
            # We apply our own pixel bound; Pillow's DecompressionBombWarning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(f"{width}x{height} exceeds max_pixels={max_pixels}")
            if min(width, height) < min_size:
                raise BadImageError(f"{width}x{height} is smaller than min_size={min_size}")
            if target_short_side is not None and image.format == "JPEG":
                scale = target_short_side / min(width, height)
                image.draft(None, (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except BadImageError:
        raise
    except Exception as error:  # noqa: BLE001
        # Truncated files and non-images raise OSError, but fuzzed or odd files make Pillow raise
        # almost anything (SyntaxError, struct.error, IndexError, ...). None may stop training.
        raise BadImageError(f"{type(error).__name__}: {error}") from error


def resize_and_crop(image: Image.Image, image_size: int, *, crop_offset: float = 0.5) -> np.ndarray:
    """Resizes the shorter side to `image_size` and crops a square along the longer side.

    Args:
      image: an RGB image.
      image_size: side of the square output.
      crop_offset: where the crop sits along the longer side, 0.0 (left/top) to 1.0
        (right/bottom); 0.5 is a centre crop.

    Returns:
      uint8 array of shape (image_size, image_size, 3).
    """
    width, height = image.size
    side = min(width, height)
    left = round((width - side) * crop_offset)
    top = round((height - side) * crop_offset)
    # Cropping in source coordinates inside resize() avoids resizing pixels we then throw away.
    return image_io.resize(
        image,
        (image_size, image_size),
        resample=Image.Resampling.BILINEAR,
        box=(left, top, left + side, top + side),
    )


def preprocess_example(
    raw: bytes | np.ndarray,
    *,
    image_size: int,
    min_size: int,
    max_pixels: int,
    crop_offset: float = 0.5,
) -> np.ndarray:
    """Encoded bytes (or an already decoded HWC uint8 RGB array) -> (image_size, image_size, 3)."""
    if isinstance(raw, np.ndarray):
        image = Image.fromarray(raw, "RGB")
    else:
        image = decode_image(
            raw, min_size=min_size, max_pixels=max_pixels, target_short_side=image_size
        )
    return resize_and_crop(image, image_size, crop_offset=crop_offset)
