"""The image and video runs (`fnst_jax.stylize.run`), driven through the command line: bad
inputs reported while the rest are processed, atomic outputs, alpha/ICC and colours kept,
videos and GIFs with their timing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from stylize_helpers import (
    gif_durations,
    natural_image,
    run,
    save,
    save_test_model,
    write_test_gif,
    write_test_video,
)

from fnst_jax import image_io, video

pytestmark = pytest.mark.usefixtures("fast_compile")

RGB_TO_YCBCR = image_io._RGB_TO_YCBCR  # ITU-R BT.601: luma, then the two chroma rows


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_test_model(tmp_path_factory.mktemp("model") / "candy.npz")


def test_bad_inputs_are_reported_and_the_rest_processed(model_path, tmp_path, capsys):
    good = save(tmp_path / "good.png", natural_image(24, 24))
    buffer = tmp_path / "full.jpg"
    save(buffer, natural_image(48, 48), quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    text = tmp_path / "text.png"
    text.write_text("definitely not a PNG")
    unsupported = tmp_path / "notes.txt"
    unsupported.write_text("hello")
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    inputs = [missing, truncated, text, unsupported, broken_video, good]
    assert run(model_path, out, *inputs) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 5, err
    for bad in (missing, truncated, text, unsupported, broken_video):
        assert sum(str(bad) in line for line in errors) == 1, (bad, errors)
    assert "Traceback" not in err
    assert "stylized 1 of 6 inputs (5 failed)" in err
    assert sorted(p.name for p in out.iterdir()) == ["good_candy.png"]


def test_interrupted_write_leaves_nothing(model_path, tmp_path, monkeypatch, capsys):
    source = save(tmp_path / "x.png", natural_image(24, 24))
    out = tmp_path / "out"

    def half_write(file, *args, **kwargs):
        file.write(b"\x89PNG half an image")
        raise OSError("disk full")

    monkeypatch.setattr(image_io, "encode_image", half_write)
    assert run(model_path, out, source) == 1
    assert "disk full" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # neither the output nor a temporary file


def test_preserve_color_keeps_input_chroma(model_path, tmp_path):
    image = natural_image(32, 32, seed=4)
    source = save(tmp_path / "x.png", image)
    assert run(model_path, tmp_path / "out", source, extra=["--preserve-color"]) == 0
    result = np.asarray(Image.open(tmp_path / "out" / "x_candy.png")).astype(np.float32)
    chroma = RGB_TO_YCBCR[1:].T
    unclipped = (result.min(-1) > 0) & (result.max(-1) < 255)
    assert unclipped.mean() > 0.5
    difference = np.abs(result @ chroma - image.astype(np.float32) @ chroma)[unclipped]
    assert difference.max() < 1.5  # uint8 rounding only
    # ... while the luminance did change.
    luma = RGB_TO_YCBCR[0]
    assert np.abs(result @ luma - image.astype(np.float32) @ luma).mean() > 5


def test_alpha_and_icc_survive_into_png_and_alpha_is_dropped_in_jpg(model_path, tmp_path):
    rgb = natural_image(24, 40)
    alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (24, 1))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save(tmp_path / "rgba.png", np.dstack([rgb, alpha]), icc_profile=srgb)
    out = tmp_path / "out"
    for fmt in ("png", "jpg"):
        assert run(model_path, out, tmp_path / "rgba.png", extra=[f"--format={fmt}"]) == 0
    png = Image.open(out / "rgba_candy.png")
    assert png.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(png)[..., 3], alpha)
    assert png.info.get("icc_profile") == srgb
    assert Image.open(out / "rgba_candy.jpg").mode == "RGB"


def test_video_and_gif_round_trip(model_path, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_test_video(clip)
    gif = write_test_gif(tmp_path / "anim.gif")  # 3 frames of 30x40, 50/120/200 ms, loop 0
    out = tmp_path / "out"
    assert run(model_path, out, clip, gif, extra=["--batch-size=2"]) == 0
    info, result = video.read_video(out / "clip_candy.mp4")
    assert info.fps == pytest.approx(12)
    assert info.size == (64, 48)
    assert len(list(result)) == 6
    with Image.open(out / "anim_candy.gif") as animation:
        assert animation.n_frames == 3
        assert gif_durations(animation) == [50, 120, 200]
        assert animation.size == (30, 40)


def test_temporal_blend_of_video_frames(model_path, tmp_path, monkeypatch, capsys):
    """--temporal-blend 0 (the default) leaves every frame as it was; ALPHA blends each with
    the previous output along the input's optical flow (`temporal.TemporalBlender`)."""
    pytest.importorskip("cv2")
    from fnst_jax import temporal
    from fnst_jax.stroke import Stroke
    from fnst_jax.stylize import loading
    from fnst_jax.stylize import run as runs
    from fnst_jax.stylize.inputs import Options

    scene = natural_image(48, 64 + 2 * 5, seed=4)
    frames = [scene[:, 2 * i : 2 * i + 64] for i in range(5)]  # a 2 px/frame pan
    stylizer = loading.load_stylizer(model_path)
    # Batches of 2, as _stylized_frames runs them below (same programs, same numbers).
    plain = [out for i in range(0, 5, 2) for out in stylizer.stylize_batch(frames[i : i + 2])]

    class Bar:
        def update(self, count):
            pass

    def stylized(alpha):
        options = Options(temporal_blend=alpha, stroke=Stroke(keep_brightness=False))
        return list(runs._stylized_frames(iter(frames), stylizer, (64, 48), 2, options, Bar()))

    for got, expected in zip(stylized(0.0), plain, strict=True):
        np.testing.assert_array_equal(got, expected)
    blender = temporal.TemporalBlender(0.5)
    blended = stylized(0.5)
    for frame, output, got in zip(frames, plain, blended, strict=True):
        np.testing.assert_array_equal(got, blender(frame, output))
    changed = [not np.array_equal(got, out) for got, out in zip(blended, plain, strict=True)]
    assert changed == [False, True, True, True, True]  # the first frame has no previous one

    clip = tmp_path / "clip.mp4"
    write_test_video(clip)
    assert run(model_path, tmp_path / "out.mp4", clip, extra=["--temporal-blend=0.5"]) == 0
    assert len(list(video.read_video(tmp_path / "out.mp4")[1])) == 6
    capsys.readouterr()
    assert run(model_path, tmp_path / "bad.mp4", clip, extra=["--temporal-blend=1.5"]) == 2
    assert "--temporal-blend must be 0 (off) or between 0 and 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed
    assert run(model_path, tmp_path / "bad.mp4", clip, extra=["--temporal-blend=0.5"]) == 2
    assert "pip install 'fnst_jax[video]'" in capsys.readouterr().err
    assert not (tmp_path / "bad.mp4").exists()
