"""Image files in and out (`fnst_jax.image_io`): every mode to 8-bit RGB, EXIF orientation,
alpha and ICC kept where the format can, atomic writes; `to_uint8`, `transfer_luminance`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms
from stylize_helpers import natural_image, save

from fnst_jax import image_io
from fnst_jax.errors import UserError


def test_modes_and_orientation(tmp_path):
    rgb = natural_image(24, 40)
    gray16 = (np.linspace(0, 65535, 24 * 40).reshape(24, 40)).astype(np.uint16)
    save(tmp_path / "gray16.png", gray16)
    assert image_io.read_image(tmp_path / "gray16.png").rgb[-1, -1].tolist() == [255] * 3
    save(tmp_path / "palette.png", Image.fromarray(rgb).convert("P"))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    save(tmp_path / "gray.jpg", rgb[..., 0])
    for name in ("palette.png", "cmyk.jpg", "gray.jpg"):
        decoded = image_io.read_image(tmp_path / name)
        assert decoded.rgb.shape == (24, 40, 3) and decoded.rgb.dtype == np.uint8, name
    # EXIF orientation 6 (rotate 90 degrees clockwise): 40x24 stored -> 24x40 shown.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    assert image_io.read_image(tmp_path / "rotated.jpg").rgb.shape == (40, 24, 3)


def test_alpha_and_icc_round_trip(tmp_path):
    rgb = natural_image(24, 40)
    alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (24, 1))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save(tmp_path / "rgba.png", np.dstack([rgb, alpha]), icc_profile=srgb)
    decoded = image_io.read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(decoded.alpha, alpha)
    assert decoded.icc_profile == srgb
    png = image_io.write_image(
        tmp_path / "out.png", decoded.rgb, decoded.alpha, icc_profile=decoded.icc_profile
    )
    with Image.open(png) as written:
        assert written.mode == "RGBA" and written.info.get("icc_profile") == srgb
        np.testing.assert_array_equal(np.asarray(written), np.dstack([rgb, alpha]))
    jpg = image_io.write_image(tmp_path / "out.jpg", decoded.rgb, decoded.alpha)
    assert Image.open(jpg).mode == "RGB"  # JPEG has no alpha: dropped, no error


def test_unreadable_files_raise_a_user_error(tmp_path):
    text = tmp_path / "text.png"
    text.write_text("definitely not a PNG")
    buffer = save(tmp_path / "full.jpg", natural_image(48, 48), quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    for path in (tmp_path / "missing.png", text, truncated):
        with pytest.raises(image_io.ImageReadError, match=path.name) as caught:
            image_io.read_image(path)
        assert isinstance(caught.value, UserError)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def half_write(file, *args, **kwargs):
        file.write(b"\x89PNG half an image")
        raise OSError("disk full")

    monkeypatch.setattr(image_io, "encode_image", half_write)
    with pytest.raises(OSError, match="disk full"):
        image_io.write_image(tmp_path / "x.png", natural_image(8, 8))
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_to_uint8_rounds_and_clips():
    values = np.array([-3.0, 0.4, 0.6, 127.5, 254.6, 300.0], np.float32)
    assert image_io.to_uint8(values).tolist() == [0, 0, 1, 128, 255, 255]


def test_transfer_luminance_keeps_chroma_and_takes_luma():
    original = natural_image(16, 16, seed=1).astype(np.float32)
    stylized = natural_image(16, 16, seed=2).astype(np.float32)[..., ::-1]
    result = image_io.transfer_luminance(stylized, original)
    to_ycbcr = image_io._RGB_TO_YCBCR
    np.testing.assert_allclose(result @ to_ycbcr[0], stylized @ to_ycbcr[0], atol=1e-3)
    np.testing.assert_allclose(result @ to_ycbcr[1:].T, original @ to_ycbcr[1:].T, atol=1e-3)
