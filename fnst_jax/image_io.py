"""Image files in and out: any mode Pillow reads -> 8-bit RGB (+ alpha), atomic writes.

Reading applies the EXIF orientation (phones store portrait photos as rotated landscape
pixels plus a tag), and converts every Pillow mode to uint8 RGB: grayscale and 1-bit are
replicated, palette images expanded, CMYK converted, 16-bit and float images scaled to
8 bits. Transparency (RGBA, LA, palette transparency) is kept as a separate alpha plane so
the caller can put it back into PNG/WebP outputs; JPEG has no alpha, so it is dropped there.
The ICC colour profile is carried over when the pixels stay in the profile's colour space
(not after a CMYK -> RGB conversion, where the CMYK profile would be wrong).

Writing goes to a temporary file in the destination folder, then `os.replace`, so a crash
or Ctrl-C never leaves a half-written image under the final name.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

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

# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)

# Refuse decompression bombs loudly rather than allocating tens of GB.
Image.MAX_IMAGE_PIXELS = 1 << 30


class ImageReadError(ValueError):
    """An input that is not a readable image (missing, corrupt, truncated, unknown format)."""


@dataclasses.dataclass
class DecodedImage:
    """8-bit RGB pixels, optional alpha plane, and what is needed to write a faithful copy."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray | None  # (H, W) uint8, or None when the image is opaque
    icc_profile: bytes | None
    source_format: str | None  # Pillow's format name, e.g. "JPEG"


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float plane to uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        # Float images (mode F) are usually 0..1 or 0..255; pick by range.
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(array) * scale + 0.5, 0, 255).astype(np.uint8)
    # 16-bit data (I;16 and 16-bit PNGs read as mode I): 0..65535 -> 0..255.
    if int(array.max(initial=0)) > 255:
        return np.clip((array.astype(np.float32) / 257.0) + 0.5, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


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
        gray = _to_uint8(np.asarray(image))
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
                image.load()  # force the full decode now: truncated files fail here
                source_format = image.format
                icc = image.info.get("icc_profile")
                if image.mode == "CMYK":
                    icc = None  # the pixels are converted to RGB; a CMYK profile no longer fits
                image = ImageOps.exif_transpose(image)
                rgb, alpha = pil_to_rgb_alpha(image)
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: no such file") from e
    except Image.UnidentifiedImageError as e:
        raise ImageReadError(f"{path}: not an image Pillow can identify") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: image too large ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated/corrupt data as OSError or SyntaxError.
        raise ImageReadError(f"{path}: cannot decode image ({e})") from e
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


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(temporary_path)` and rename the result onto `path` only if it succeeded.

    The temporary file lives in the destination folder (same file system, so the rename is
    atomic) and keeps the final extension (tools like ffmpeg pick the container from it).
    On any exception, Ctrl-C included, the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


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
    rgb = read_image(path).rgb
    if not shorter_side:
        return rgb
    height, width = rgb.shape[:2]
    scale = shorter_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
