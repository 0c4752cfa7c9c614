"""End-to-end tests of stylize.py / fnst_jax.stylize_lib on tiny generated inputs.

The model has random weights with the last layer scaled so outputs span 0..255 (an
untrained net outputs ~0 everywhere, which would make every comparison trivially pass).
Images stay <= 48 px so that, with the model's pad of 8 and 64-px buckets, nearly every
test runs the same compiled (1, 64, 64, 3) program.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image, ImageCms

from fnst_jax import export, image_io, stylize_lib, video
from fnst_jax.transformer_net import TransformerNet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
    """Tiny shapes: compile time dominates, so skip most XLA optimisations here."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def make_test_model(seed: int = 0) -> TransformerNet:
    model = TransformerNet(rngs=nnx.Rngs(seed))
    conv = model.out.conv
    conv.kernel[...] = conv.kernel[...] * 40.0  # output std ~40 ...
    conv.bias[...] = conv.bias[...] * 0 + 127.5  # ... around mid-grey
    return model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "candy.npz"
    export.save_model(path, make_test_model(), {"pad": 8, "image_size": 64})
    return path


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus mild noise: more photo-like than pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            128 + 90 * np.sin(x / 7 + seed),
            128 + 90 * np.cos(y / 9),
            128 + 60 * np.sin((x + y) / 11),
        ],
        axis=-1,
    )
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def save(path: Path, image: np.ndarray | Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(path, **kwargs)
    return path


def run(model_path: Path, output: Path, *inputs, extra=()) -> int:
    argv = ["stylize.py", f"--model={model_path}", f"--output={output}", *extra]
    return stylize_lib.main(argv + [str(i) for i in inputs])


def test_sizes_odd_shapes_and_folder_recursion(model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    save(photos / "a.jpg", natural_image(31, 17))  # odd, portrait
    save(photos / "deep" / "sub" / "b.png", natural_image(20, 45, seed=1))
    save(photos / "deep" / "c.webp", natural_image(48, 48, seed=2))
    (photos / "notes.txt").write_text("not an image, ignored when searching folders")
    out = tmp_path / "out"
    assert run(model_path, out, photos) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a_candy.jpg",
        "deep/c_candy.webp",
        "deep/sub/b_candy.png",
    ]
    assert Image.open(out / "a_candy.jpg").size == (17, 31)
    assert Image.open(out / "deep/sub/b_candy.png").size == (45, 20)
    assert Image.open(out / "deep/c_candy.webp").size == (48, 48)
    assert "stylized 3 of 3 inputs" in capsys.readouterr().err


def test_size_scale_format_and_single_file_output(model_path, tmp_path):
    source = save(tmp_path / "in.png", natural_image(40, 30))
    out = tmp_path / "out"
    assert run(model_path, out, source, extra=["--size=20", "--format=jpg", "--suffix=_s"]) == 0
    assert Image.open(out / "in_s.jpg").size == (15, 20)
    single = tmp_path / "one.png"
    assert run(model_path, single, source, extra=["--scale=0.5"]) == 0
    assert Image.open(single).size == (15, 20)
    # A file name as --output with two inputs is a usage error.
    assert run(model_path, tmp_path / "two.png", source, source) == 2


def test_uniform_image_stays_uniform_to_the_border(model_path, tmp_path):
    """Reflection padding everywhere (pad, bucket, every conv) keeps a flat image flat;
    zero padding anywhere would darken or tint a band along the border."""
    flat = np.full((37, 23, 3), (200, 120, 40), np.uint8)
    source = save(tmp_path / "flat.png", flat)
    assert run(model_path, tmp_path / "out", source, extra=["--quiet"]) == 0
    result = np.asarray(Image.open(tmp_path / "out" / "flat_candy.png")).astype(int)
    assert result.shape == (37, 23, 3)
    assert np.ptp(result.reshape(-1, 3), axis=0).max() <= 1


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


def test_existing_outputs_and_inputs_are_never_overwritten(model_path, tmp_path, capsys):
    source = save(tmp_path / "in" / "x.png", natural_image(24, 24))
    out = tmp_path / "out"
    assert run(model_path, out, source) == 0
    target = out / "x_candy.png"
    target.write_bytes(b"sentinel")
    capsys.readouterr()
    assert run(model_path, out, source) == 0  # skipping is not a failure
    captured = capsys.readouterr().err
    assert "skipped:" in captured and "1 skipped: exists" in captured
    assert target.read_bytes() == b"sentinel"
    assert run(model_path, out, source, extra=["--overwrite"]) == 0
    assert Image.open(target).size == (24, 24)
    # Output path == input path: refused even with --overwrite.
    before = source.read_bytes()
    code = run(model_path, source.parent, source, extra=["--suffix=", "--overwrite"])
    assert code == 1
    assert "it is an input file" in capsys.readouterr().err
    assert source.read_bytes() == before


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


@pytest.mark.parametrize(
    "content, reason",
    [(None, "not found"), (b"garbage", "not an fnst_jax model"), ("foreign", "no __fnst_meta__")],
)
def test_bad_model_exits_2(tmp_path, capsys, content, reason):
    model = tmp_path / "model.npz"
    if content == "foreign":
        np.savez(model, weights=np.zeros(3))
    elif content is not None:
        model.write_bytes(content)
    source = save(tmp_path / "x.png", natural_image(8, 8))
    assert run(model, tmp_path / "out", source) == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tiles_blend_exactly_with_an_identity_network():
    """Tile placement and feathered weights, checked exactly: identity in, identity out."""
    stylizer = stylize_lib.Stylizer(
        make_test_model(), pad=8, max_pixels=32 * 32, tile=32, overlap=12
    )
    stylizer.run_network = lambda batch, valid=None, statistics=None: batch.astype(np.float32)
    image = natural_image(71, 50)
    assert stylizer.needs_tiling(71, 50)
    np.testing.assert_allclose(stylizer.stylize(image), image, atol=1e-3)


def uint8_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(stylize_lib.to_uint8(a).astype(int) - stylize_lib.to_uint8(b).astype(int))


def test_tiled_close_to_untiled():
    """Tiles normalised with statistics from a shrunk whole image, on the whole image's
    stride grid. Measured on this random net (a 96-px image in 64-px tiles, the worst case:
    the stats pass runs at ~0.4x and tile edges are never far): mean |diff| 8.8/255, max 63
    (the colleague measured ~10 and ~60 with per-tile statistics off the grid). On a real
    photo (962x642, 512-px tiles, overlap 128): mean 3.0, p99 13, max 68 (was 10.4, 42, 126).
    Bounds leave margin; broken blending (hard seams, misplaced tiles) gives far more."""
    model = make_test_model()
    image = natural_image(96, 96, seed=3)
    whole = stylize_lib.Stylizer(model, pad=8, max_pixels=1 << 20).stylize(image)
    tiled_stylizer = stylize_lib.Stylizer(model, pad=8, max_pixels=64 * 64, tile=64, overlap=24)
    tiled = tiled_stylizer.stylize(image)
    assert tiled_stylizer.compiled_shapes == {(1, 64, 64, 3)}  # the stats pass included
    difference = uint8_difference(whole, tiled)
    assert difference.mean() < 11, difference.mean()
    assert difference.max() < 90, difference.max()


def test_tiles_use_the_given_whole_image_statistics():
    """With the exact whole-image statistics, tiles differ from the untiled result only
    within the network's reach of their edges: measured mean |diff| 3.9/255 here, against
    7.4 when each tile uses its own statistics and ~10 off the stride grid."""
    model = make_test_model()
    image = natural_image(96, 96, seed=3)
    untiled = stylize_lib.Stylizer(model, pad=8, max_pixels=1 << 20)
    whole = untiled.stylize(image)
    exact = untiled.image_statistics(image)  # fits max_pixels: measured at full size
    assert [s.shape for s in exact][:2] == [(2, 1, 1, 1, 32), (2, 1, 1, 1, 64)]
    tiled_stylizer = stylize_lib.Stylizer(model, pad=8, max_pixels=64 * 64, tile=64, overlap=24)
    tiled_stylizer.image_statistics = lambda image: exact
    difference = uint8_difference(whole, tiled_stylizer.stylize(image))
    assert difference.mean() < 5.5, difference.mean()


def test_mixed_sizes_share_one_compiled_shape():
    stylizer = stylize_lib.Stylizer(make_test_model(), pad=8, bucket=64, batch_size=1)
    for height, width in [(17, 31), (40, 29), (48, 48)]:
        assert stylizer.stylize(natural_image(height, width)).shape == (height, width, 3)
    assert stylizer.compiled_shapes == {(1, 64, 64, 3)}


def test_preserve_color_keeps_input_chroma(model_path, tmp_path):
    image = natural_image(32, 32, seed=4)
    source = save(tmp_path / "x.png", image)
    assert run(model_path, tmp_path / "out", source, extra=["--preserve-color"]) == 0
    result = np.asarray(Image.open(tmp_path / "out" / "x_candy.png")).astype(np.float32)
    chroma = stylize_lib._RGB_TO_YCBCR[1:].T
    unclipped = (result.min(-1) > 0) & (result.max(-1) < 255)
    assert unclipped.mean() > 0.5
    difference = np.abs(result @ chroma - image.astype(np.float32) @ chroma)[unclipped]
    assert difference.max() < 1.5  # uint8 rounding only
    # ... while the luminance did change.
    luma = stylize_lib._RGB_TO_YCBCR[0]
    assert np.abs(result @ luma - image.astype(np.float32) @ luma).mean() > 5


def test_image_modes_orientation_alpha(model_path, tmp_path):
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
    # Alpha survives into png and is dropped (no error) in jpg.
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


def write_test_video(path: Path, frames: int = 6, size=(64, 48), fps: int = 12) -> None:
    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=fps, macro_block_size=1, ffmpeg_log_level="error"
    )
    writer.send(None)
    for index in range(frames):
        writer.send(natural_image(size[1], size[0], seed=index))
    writer.close()


def test_video_and_gif_round_trip(model_path, tmp_path):
    clip = tmp_path / "clip.mp4"
    write_test_video(clip)
    frames = [natural_image(40, 30, seed=i) for i in range(3)]
    gif = tmp_path / "anim.gif"
    Image.fromarray(frames[0]).save(
        gif,
        save_all=True,
        append_images=[Image.fromarray(f) for f in frames[1:]],
        duration=[50, 120, 200],
        loop=0,
    )
    out = tmp_path / "out"
    assert run(model_path, out, clip, gif, extra=["--batch-size=2"]) == 0
    info, result = video.read_video(out / "clip_candy.mp4")
    assert info.fps == pytest.approx(12)
    assert info.size == (64, 48)
    assert len(list(result)) == 6
    with Image.open(out / "anim_candy.gif") as animation:
        assert animation.n_frames == 3
        durations = []
        for index in range(3):
            animation.seek(index)
            durations.append(animation.info["duration"])
        assert durations == [50, 120, 200]
        assert animation.size == (30, 40)


def test_real_entry_point_exit_codes(model_path, tmp_path):
    source = save(tmp_path / "x.png", natural_image(24, 24))
    env = dict(os.environ, FNST_JAX_CACHE=str(tmp_path / "cache"))
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    command = [sys.executable, str(REPO / "stylize.py"), f"--model={model_path}"]
    result = subprocess.run(
        [*command, f"--output={tmp_path / 'out'}", str(source), str(tmp_path / "nope.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "error: " in result.stderr and "nope.png" in result.stderr
    assert "stylized 1 of 2 inputs (1 failed)" in result.stderr
    assert (tmp_path / "out" / "x_candy.png").is_file()
    assert (tmp_path / "cache" / "jax_cache").is_dir()
