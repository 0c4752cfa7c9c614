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

# Modes that carry transparency; they are composited onto white so transparent pixels (whose
# colour values are often arbitrary, typically black) do not leak into the content image.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class BadImageError(ValueError):
    """An image that cannot be used for training: unreadable, too small, or too large."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Returns `image` as 8-bit RGB: alpha composited on white, 16-bit scaled, CMYK converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own convert() clips 16-bit values at 255 instead of scaling them.
        pixels = np.asarray(image).astype(np.uint16) >> 8
        return Image.fromarray(pixels.astype(np.uint8), "L").convert("RGB")
    if mode == "I":
        # 32-bit integer mode: what Pillow gives for 16-bit greyscale PNG/TIFF data.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L").convert(
            "RGB"
        )
    if mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        if pixels.size and pixels.max() <= 1.0:
            pixels = pixels * 255.0
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L").convert(
            "RGB"
        )
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
    square = image.resize(
        (image_size, image_size),
        Image.Resampling.BILINEAR,
        box=(left, top, left + side, top + side),
    )
    return np.asarray(square, dtype=np.uint8)


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
