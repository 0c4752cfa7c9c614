"""Image files in and out: any mode Pillow reads -> 8-bit RGB (+ alpha), atomic writes.

Reading applies the EXIF orientation (phones store portrait photos as rotated landscape
pixels plus a tag), and converts every Pillow mode to uint8 RGB: grayscale and 1-bit are
replicated, palette images expanded, CMYK converted, 16-bit and float images scaled to
8 bits. Transparency (RGBA, LA, palette transparency) is kept as a separate alpha plane so
the caller can put it back into PNG/WebP outputs; JPEG has no alpha, so it is dropped there.
The ICC colour profile is carried over when the pixels stay in the profile's colour space
(not after a CMYK -> RGB conversion, where the CMYK profile would be wrong).

Writing goes through `fnst_jax.files.write_atomic`, so a crash or Ctrl-C never leaves a
half-written image under the final name.

The pixel helpers every part of fnst_jax uses live here too, each once: `to_uint8` (floats on
the 0..255 scale, e.g. the network's output -> pixels: rounded to the nearest level, clipped),
`check_rgb_image` (what the engines take), `resize` and its variants (Lanczos unless told:
`resize_shorter_side` for style images, `resize_longest_side` for evaluation,
`resize_rgb_alpha` for stylize's inputs) and `transfer_luminance` (the "preserve colour"
option).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from fnst_jax.errors import UserError
from fnst_jax.files import write_atomic

# Extensions picked up when a folder is searched; any other file there is ignored.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# Output formats: name -> (Pillow format, extension, keeps alpha).
OUTPUT_FORMATS = {
    "jpg": ("JPEG", ".jpg", False),
    "png": ("PNG", ".png", True),
    "webp": ("WEBP", ".webp", True),
}
EXTENSION_TO_FORMAT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}

# Refuse decompression bombs loudly rather than allocating tens of GB.
Image.MAX_IMAGE_PIXELS = 1 << 30


class ImageReadError(UserError, ValueError):
    """An input that is not a readable image (missing, corrupt, truncated, unknown format)."""


@dataclasses.dataclass
class DecodedImage:
    """8-bit RGB pixels, optional alpha plane, and what is needed to write a faithful copy."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, or None when the image is opaque
    icc_profile: bytes | None
    source_format: str | None  # Pillow's format name, e.g. "JPEG"


def _plane_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float plane to uint8 (`to_uint8`)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        # Float images (mode F) are usually 0..1 or 0..255; pick by range.
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
        return to_uint8(np.nan_to_num(array) * scale)
    # 16-bit data (I;16 and 16-bit PNGs read as mode I): 0..65535 -> 0..255.
    if int(array.max(initial=0)) > 255:
        return to_uint8(array.astype(np.float32) / 257.0)
    return to_uint8(array)


def pil_to_rgb_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow image -> (uint8 RGB (H, W, 3), uint8 alpha (H, W) or None)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("L", "1") and "transparency" in image.info:
        image = image.convert("LA")
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        data = np.asarray(image)
        rgb = np.ascontiguousarray(data[..., :3])
        alpha = np.ascontiguousarray(data[..., 3]) if mode == "RGBA" else None
    elif mode in ("L", "LA", "1"):
        data = np.asarray(image.convert("LA") if mode == "1" else image)
        gray = data[..., 0] if data.ndim == 3 else data
        rgb = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
        alpha = np.ascontiguousarray(data[..., 1]) if data.ndim == 3 else None
    elif mode.startswith("I") or mode == "F":
        # Single-channel 16/32-bit or float images.
        gray = _plane_to_uint8(np.asarray(image))
        rgb = np.repeat(gray[..., None], 3, axis=-1)
        alpha = None
    else:
        # CMYK, YCbCr, LAB, HSV, RGBX, RGBa, ...: Pillow knows the conversion.
        keeps_alpha = "A" in mode or "a" in mode
        data = np.asarray(image.convert("RGBA" if keeps_alpha else "RGB"))
        rgb = np.ascontiguousarray(data[..., :3])
        alpha = np.ascontiguousarray(data[..., 3]) if keeps_alpha else None
    if alpha is not None and alpha.min() == 255:
        alpha = None  # fully opaque: no need to carry it
    return rgb, alpha


def read_image(path: str | os.PathLike) -> DecodedImage:
    """Decode an image file fully; raises ImageReadError with a readable reason."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return decode_opened(image)
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: no such file") from e
    except Image.UnidentifiedImageError as e:
        raise ImageReadError(f"{path}: not an image Pillow can identify") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: image too large ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated/corrupt data as OSError or SyntaxError.
        raise ImageReadError(f"{path}: cannot decode image ({e})") from e


def decode_opened(image: Image.Image) -> DecodedImage:
    """Fully decode an image Pillow has opened (a file, or bytes in memory): EXIF
    orientation applied, any mode to 8-bit RGB + alpha, the ICC profile kept where it still
    fits. Pillow's errors propagate (truncated data fails here); callers word them."""
    image.load()  # force the full decode now: truncated data fails here
    source_format = image.format
    icc = image.info.get("icc_profile")
    if image.mode == "CMYK":
        icc = None  # the pixels are converted to RGB; a CMYK profile no longer fits
    rgb, alpha = pil_to_rgb_alpha(ImageOps.exif_transpose(image))
    return DecodedImage(rgb, alpha, icc or None, source_format)


def encode_image(
    file: IO[bytes],
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    format: str = "png",
    quality: int = 95,
    icc_profile: bytes | None = None,
) -> None:
    """Encode uint8 RGB (+ alpha for png/webp) into an open binary file."""
    pil_format, _, keeps_alpha = OUTPUT_FORMATS[format]
    if alpha is not None and keeps_alpha:
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    else:
        image = Image.fromarray(rgb, "RGB")
    options: dict = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if format == "jpg":
        options.update(quality=quality, optimize=True)
    elif format == "webp":
        options.update(quality=quality, method=4)
    elif format == "png":
        options.update(compress_level=6)
    image.save(file, format=pil_format, **options)


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    format: str | None = None,
    quality: int = 95,
    icc_profile: bytes | None = None,
) -> Path:
    """Atomically write an image; the format defaults to the path's extension."""
    path = Path(path)
    if format is None:
        format = EXTENSION_TO_FORMAT.get(path.suffix.lower())
        if format is None:
            raise ValueError(f"{path}: cannot tell the output format from the extension")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            encode_image(f, rgb, alpha, format=format, quality=quality, icc_profile=icc_profile)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, write)


def read_rgb_resized(path: str | os.PathLike, shorter_side: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3), its shorter side resized to `shorter_side`
    (Lanczos; None keeps the size). How training, evaluation and Gatys load a style image."""
    return resize_shorter_side(read_image(path).rgb, shorter_side)


def resize(
    image: np.ndarray | Image.Image,
    size: tuple[int, int],
    *,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
    box: tuple[int, int, int, int] | None = None,
    reducing_gap: float | None = None,
) -> np.ndarray:
    """uint8 pixels (an (H, W, 3) RGB or (H, W) array, or a Pillow image) resized to `size`
    (width, height) -> a uint8 array. box: the source region (left, top, right, bottom) to
    resize, a crop at no extra cost; reducing_gap: Pillow's shortcut for large reductions
    (faster, slightly other pixels). An array of that size already (no box) comes back as
    it is."""
    if isinstance(image, np.ndarray):
        if box is None and (image.shape[1], image.shape[0]) == tuple(size):
            return image
        image = Image.fromarray(image)
    return np.asarray(image.resize(size, resample, box=box, reducing_gap=reducing_gap))


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(width, height) scaled, each side rounded and at least 1 px."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_shorter_side(rgb: np.ndarray, shorter_side: int | None) -> np.ndarray:
    """uint8 RGB (H, W, 3) with its shorter side resized to `shorter_side` (Lanczos; None
    keeps it as it is): how training, evaluation and Gatys size a style image."""
    if not shorter_side:
        return rgb
    height, width = rgb.shape[:2]
    return resize(rgb, _scaled_size(height, width, shorter_side / min(height, width)))


def resize_longest_side(rgb: np.ndarray, longest_side: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) resized (Lanczos) so that its longest side is `longest_side` px."""
    height, width = rgb.shape[:2]
    return resize(rgb, _scaled_size(height, width, longest_side / max(height, width)))


def resize_rgb_alpha(
    rgb: np.ndarray, alpha: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """How `stylize.py --size/--scale` (and the service) resize an input: uint8 RGB with
    Lanczos after Pillow's reducing_gap=3 shortcut, the alpha plane (if any) with plain
    Lanczos, to `size` (width, height); a no-op at the same size."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb, alpha
    return resize(rgb, size, reducing_gap=3), None if alpha is None else resize(alpha, size)


def check_rgb_image(image: np.ndarray) -> None:
    """ValueError unless `image` is a non-empty uint8 (H, W, 3) RGB array (what the stylize
    engines take)."""
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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats on the 0..255 scale (any shape, e.g. the network's output) -> uint8, rounded to
    the nearest level and clipped."""
    return np.clip(np.rint(np.asarray(image, np.float32)), 0, 255).astype(np.uint8)


LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma Y' (the JPEG Y) of R'G'B'
# ITU-R BT.601 full-range (JPEG) RGB <-> YCbCr, without the 128 chroma offset: the offset
# cancels in transfer_luminance.
_RGB_TO_YCBCR = np.array(
    [LUMA_WEIGHTS, [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    np.float32,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR).astype(np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 or float RGB (..., 3) on the 0..255 scale -> its BT.601 luma Y', float32."""
    return rgb.astype(np.float32) @ _RGB_TO_YCBCR[0]


def transfer_luminance(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Stylized luminance (Y) with the original's chroma (Cb, Cr): keeps the input colours.
    Float in, float out (0..255 scale); round with `to_uint8`."""
    y = luma(stylized)
    chroma = original.astype(np.float32) @ _RGB_TO_YCBCR[1:].T
    ycbcr = np.concatenate([y[..., None], chroma], axis=-1)
    return ycbcr @ _YCBCR_TO_RGB.T
