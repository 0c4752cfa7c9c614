"""Request bodies to pixels and pixels to response bodies, in memory only.

  * `image_bytes`: the body of `POST /v1/stylize` -> the uploaded file's bytes (the raw
    body with `Content-Type: image/*`, or the multipart field `image`, parsed with
    python-multipart in memory: nothing is spooled to disk).
  * `decode`: bytes -> `image_io.DecodedImage`, exactly as `stylize.py` reads a file (EXIF
    orientation applied, any mode to 8-bit RGB + alpha, ICC profile kept), after refusing
    more than `max_pixels` pixels from the header alone (decompression bombs never decode).
  * `prepare`: the decoded image resized as `stylize.py --size N` resizes it.
  * `encode`: the stylized pixels -> the bytes `stylize.py` would write for the same
    options (`image_io.encode_image` into memory).

Every problem is a `ServiceError` naming the reason (400, 413 or 415).
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
from PIL import Image
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from fnst_jax import image_io
from fnst_jax.serve.errors import ServiceError
from fnst_jax.stylize.inputs import Options, target_size

# Pillow decoders the service runs: the formats stylize.py reads as images (jpg, png, webp,
# bmp, tif, ppm/pgm/pbm; "JPEG" includes multi-picture MPO files from phones). No other
# Pillow plugin ever sees a request's bytes.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM")
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# Pillow's format name -> the output format stylize.py picks for such an input.
_OWN_OUTPUT_FORMAT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
MULTIPART_FIELD = "image"


def _bad_request(code: str, message: str) -> ServiceError:
    return ServiceError(400, code, message)


def _unsupported(message: str) -> ServiceError:
    return ServiceError(415, "unsupported_media_type", message)


# ----------------------------------------------------------------------------- bodies


def image_bytes(body: bytes, content_type: str | None) -> bytes:
    """The uploaded image's bytes from a request body and its Content-Type header."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        data = _multipart_field(body, content_type or "", MULTIPART_FIELD)
    elif media_type in ("", "application/octet-stream") or media_type.startswith("image/"):
        data = body
    else:
        raise _unsupported(
            f"unsupported Content-Type {media_type!r}: send the image as the raw body "
            f"(Content-Type: image/...) or as the multipart/form-data field "
            f"{MULTIPART_FIELD!r}"
        )
    if not data:
        raise _bad_request("empty_body", "the request holds no image (the body is empty)")
    return data


@dataclasses.dataclass
class _Part:
    headers: dict[bytes, bytes] = dataclasses.field(default_factory=dict)
    data: bytearray = dataclasses.field(default_factory=bytearray)


def _multipart_field(body: bytes, content_type: str, field: str) -> bytes:
    """The bytes of the multipart/form-data field `field`, parsed in memory."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise _bad_request("bad_multipart", "multipart/form-data body without a boundary")
    parts: list[_Part] = []
    header_name, header_value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1].headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    callbacks = {
        "on_part_begin": lambda: parts.append(_Part()),
        "on_header_field": lambda data, start, end: header_name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: header_value.extend(data[start:end]),
        "on_header_end": header_end,
        "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end]),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise _bad_request("bad_multipart", f"malformed multipart/form-data body ({e})") from e
    for part in parts:
        disposition = parse_options_header(part.headers.get(b"content-disposition"))[1]
        if disposition.get(b"name") == field.encode():
            return bytes(part.data)
    raise _bad_request(
        "bad_multipart", f"the multipart/form-data body has no field named {field!r}"
    )


# ----------------------------------------------------------------------------- decoding


def decode(data: bytes, max_pixels: int) -> image_io.DecodedImage:
    """Image bytes -> 8-bit RGB (+ alpha, ICC profile), as `image_io.read_image` reads a
    file. Refuses more than `max_pixels` pixels before decoding them (413)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size  # from the header: nothing decoded yet
                if width * height > max_pixels:
                    raise too_many_pixels(width, height, max_pixels, "the image has")
                return image_io.decode_opened(image)
    except Image.UnidentifiedImageError as e:
        raise ServiceError(
            415,
            "not_an_image",
            f"the body is not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})",
        ) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ServiceError(413, "too_many_pixels", f"image too large ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _bad_request(
            "corrupt_image", f"cannot decode the image: truncated or corrupt ({e})"
        ) from e


def too_many_pixels(width: int, height: int, max_pixels: int, what: str) -> ServiceError:
    return ServiceError(
        413,
        "too_many_pixels",
        f"{what} {width}x{height} = {width * height:,} pixels, more than this service's "
        f"limit of {max_pixels:,}",
    )


def prepare(
    decoded: image_io.DecodedImage, size: int | None, max_pixels: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The (rgb, alpha) the network gets: resized so the longest side is `size` (None:
    as is), exactly as `stylize.py --size` resizes. Refuses outputs above `max_pixels`."""
    height, width = decoded.rgb.shape[:2]
    new_width, new_height = target_size(width, height, Options(size=size))
    if new_width * new_height > max_pixels:
        raise too_many_pixels(new_width, new_height, max_pixels, f"size={size} would give")
    return image_io.resize_rgb_alpha(decoded.rgb, decoded.alpha, (new_width, new_height))


# ----------------------------------------------------------------------------- encoding


def output_format(requested: str | None, source_format: str | None) -> str:
    """The format asked for, else the input's own (jpg, png, webp), else png: what
    `stylize.py` picks."""
    return requested or _OWN_OUTPUT_FORMAT.get(source_format or "", "png")


def encode(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    *,
    format: str,
    quality: int,
    icc_profile: bytes | None,
) -> bytes:
    """The bytes `stylize.py` writes for these pixels and options."""
    buffer = io.BytesIO()
    image_io.encode_image(
        buffer, rgb, alpha, format=format, quality=quality, icc_profile=icc_profile
    )
    return buffer.getvalue()
