"""`stylize.py --model x.onnx`: the onnxruntime engine (`stylize.onnx_engine.OnnxStylizer`)
against the JAX engine through the same command line: images, colour transfer, video frames,
tiled images (exact and approximate statistics), refusals (too small; bad files; flags fixed
at export), and the real entry point run without JAX.

Bound: every output within 1/255 of the JAX path's after rounding (the exporter's bound;
float32 ONNX is within 0.001 before rounding, test_deploy.py). Videos are compared after
H.264 encoding, which turns a one-level difference in a few pixels into small differences
around them: the tolerance there is on the mean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize_helpers import (
    TEST_PAD,
    gif_durations,
    make_test_model,
    natural_image,
    run,
    save,
    write_test_gif,
    write_test_video,
)

from fnst_jax import runtime, transformer_net, video
from fnst_jax.stylize import arrays, defaults, tiling

onnxruntime = pytest.importorskip("onnxruntime")
from fnst_jax.deploy import onnx_graph  # noqa: E402 (needs onnx)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """The test model as candy.npz and as candy.onnx (same parameters, same pad)."""
    folder = tmp_path_factory.mktemp("models")
    from fnst_jax import export

    model = make_test_model()
    export.save_model(folder / "candy.npz", model, {"pad": TEST_PAD, "image_size": 64})
    properties = {"style": "candy", "pad": str(TEST_PAD), "fnst_jax_version": "test"}
    data = onnx_graph.serialize(model, TEST_PAD, properties)
    (folder / "candy.onnx").write_bytes(data)
    return folder / "candy.npz", folder / "candy.onnx"


def read(path):
    return np.asarray(Image.open(path)).astype(int)


def test_images_match_the_jax_path(models, tmp_path):
    npz, onnx_path = models
    photos = tmp_path / "photos"
    for name, (h, w) in {"a": (31, 17), "b": (31, 17), "c": (40, 33), "d": (5, 3)}.items():
        save(photos / f"{name}.png", natural_image(h, w, seed=ord(name)))
    for extra in ([], ["--preserve-color"]):
        jax_out, onnx_out = tmp_path / f"jax{len(extra)}", tmp_path / f"onnx{len(extra)}"
        assert run(npz, jax_out, photos, extra=extra) == 0
        assert run(onnx_path, onnx_out, photos, extra=[*extra, "--batch-size=2"]) == 0
        for name in "abcd":
            expected, got = (
                read(jax_out / f"{name}_candy.png"),
                read(onnx_out / f"{name}_candy.png"),
            )
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() <= 1, name


def test_video_and_gif_frames(models, tmp_path):
    npz, onnx_path = models
    clip = tmp_path / "clip.mp4"
    write_test_video(clip)  # 6 frames of 64x48
    gif = write_test_gif(tmp_path / "anim.gif")  # 3 frames of 30x40, 50/120/200 ms
    assert run(npz, tmp_path / "jax", clip, extra=["--batch-size=2"]) == 0
    assert run(onnx_path, tmp_path / "onnx", clip, gif, extra=["--batch-size=4"]) == 0
    with Image.open(tmp_path / "onnx" / "anim_candy.gif") as animation:
        assert animation.n_frames == 3 and animation.size == (30, 40)
        assert gif_durations(animation) == [50, 120, 200]
    info, frames = video.read_video(tmp_path / "onnx" / "clip_candy.mp4")
    assert info.size == (64, 48) and info.fps == pytest.approx(12)
    _, expected_frames = video.read_video(tmp_path / "jax" / "clip_candy.mp4")
    pairs = list(zip(frames, expected_frames, strict=True))
    assert len(pairs) == 6
    for got, expected in pairs:
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 0.5


@pytest.mark.slow
def test_tiled_images_match_the_jax_path(models, tmp_path):
    """Above --max-pixels both engines tile. Exact statistics: the ONNX tiles against the
    JAX engine's untiled output, which its exact tiling reproduces (test_stylize_tiling.py;
    the JAX tiled run itself costs minutes here). Approximate: against the JAX engine's
    approximate run with the same flags (the same shrunk copy, statistics and tiles)."""
    npz, onnx_path = models
    big = save(tmp_path / "in" / "big.png", natural_image(70, 80, seed=5))  # 5600 px
    small = save(tmp_path / "in" / "small.png", natural_image(40, 40))
    tiled = ["--max-pixels=4096", "--tile=64"]
    assert run(npz, tmp_path / "jax_untiled", big) == 0
    assert run(onnx_path, tmp_path / "onnx_exact", big, small, extra=tiled) == 0
    expected = read(tmp_path / "jax_untiled" / "big_candy.png")
    got = read(tmp_path / "onnx_exact" / "big_candy.png")
    assert got.shape == expected.shape == (70, 80, 3)
    assert np.abs(got - expected).max() <= 1
    assert (tmp_path / "onnx_exact" / "small_candy.png").is_file()  # untiled, same run

    approximate = [*tiled, "--tile-stats=approximate"]
    assert run(npz, tmp_path / "jax_approx", big, extra=approximate) == 0
    assert run(onnx_path, tmp_path / "onnx_approx", big, extra=approximate) == 0
    expected = read(tmp_path / "jax_approx" / "big_candy.png")
    got = read(tmp_path / "onnx_approx" / "big_candy.png")
    assert np.abs(got - expected).max() <= 1
    # Approximate statistics shift the tone: the two modes differ (by ~8 levels on average
    # with this random model), so the comparison above did test the approximate path.
    assert np.abs(got - read(tmp_path / "onnx_exact" / "big_candy.png")).mean() > 2


def test_too_small_images_are_refused(models, tmp_path, capsys):
    _, onnx_path = models
    tiny = save(tmp_path / "tiny.png", natural_image(2, 9))
    assert run(onnx_path, tmp_path / "out", tiny) == 1
    assert "too small for this ONNX model (sides of at least 3 px)" in capsys.readouterr().err


def test_flags_fixed_at_export_are_refused(models, tmp_path, capsys):
    _, onnx_path = models
    image = save(tmp_path / "x.png", natural_image(16, 16))
    assert run(onnx_path, tmp_path / "out", image, extra=["--pad=3"]) == 2
    assert "--pad 3: an ONNX model's pad was fixed at export (8 px)" in capsys.readouterr().err
    assert run(onnx_path, tmp_path / "out", image, extra=["--dtype=bfloat16"]) == 2
    assert "does not apply to an ONNX model" in capsys.readouterr().err
    assert run(onnx_path, tmp_path / "out", image, extra=[f"--pad={TEST_PAD}"]) == 0


def test_bad_onnx_files_exit_2(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), foreign)
    image = save(tmp_path / "x.png", natural_image(16, 16))
    for path, message in [
        (garbage, "onnxruntime cannot load it"),
        (foreign, "not an ONNX model exported by fnst_jax"),
        (tmp_path / "missing.onnx", "model file not found"),
    ]:
        assert run(path, tmp_path / "out", image) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_numpy_side_constants_match_the_jax_side():
    """The engines share their settings through `defaults`; what the JAX-free modules
    restate."""
    assert defaults.DTYPE_NAMES == tuple(runtime.DTYPES)
    assert arrays.SIZE_MULTIPLE == transformer_net.SIZE_MULTIPLE
    from fnst_jax import deploy

    assert deploy.NUM_NORM_LAYERS == tiling.NUM_NORM_LAYERS


@pytest.mark.slow
def test_onnx_stylizer_imports_no_jax(models, tmp_path):
    """The library: OnnxStylizer, a whole image and a tiled one, in a fresh process."""
    _, onnx_path = models
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from fnst_jax.stylize.onnx_engine import OnnxStylizer
        stylizer = OnnxStylizer(sys.argv[1], max_pixels=32 * 32, tile=32)
        for image in (np.full((20, 30, 3), 128, np.uint8), np.full((40, 30, 3), 99, np.uint8)):
            styled = stylizer.stylize(image)
            assert styled.shape == image.shape and styled.dtype == np.uint8
        assert stylizer._functions is not None, "the second image was not tiled"
        assert "jax" not in sys.modules and "flax" not in sys.modules, "JAX imported"
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script, str(onnx_path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr


# `python stylize.py ARGS`, then the JAX-side packages the process loaded.
NO_JAX_RUN = textwrap.dedent(
    """
    import runpy
    import sys
    sys.argv = sys.argv[1:]
    status = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit:
        status = exit.code
    heavy = {"jax", "jaxlib", "flax", "optax", "orbax"}
    loaded = {name.split(".")[0] for name in sys.modules} & heavy
    print("loaded:", ",".join(sorted(loaded)))
    print("fnst_jax modules:", ",".join(sorted(m for m in sys.modules if "fnst_jax" in m)))
    sys.exit(status)
    """
)


def test_stylize_py_with_an_onnx_model_imports_no_jax(models, tmp_path):
    """The entry point in a fresh process: a photo, a tiled image and a short video with the
    .onnx model, and not one JAX, Flax, optax or orbax module imported; the outputs are the
    JAX path's (same flags, run here) within the bound."""
    npz, onnx_path = models
    photo = save(tmp_path / "in" / "photo.png", natural_image(40, 30, seed=2))
    big = save(tmp_path / "in" / "big.png", natural_image(70, 80, seed=5))  # tiled
    clip = tmp_path / "in" / "clip.mp4"
    write_test_video(clip, frames=4)
    flags = ["--max-pixels=4096", "--tile=64", "--tile-stats=approximate"]
    command = [
        sys.executable,
        "-c",
        NO_JAX_RUN,
        str(REPO / "stylize.py"),
        f"--model={onnx_path}",
        f"--output={tmp_path / 'onnx'}",
        *flags,
        str(photo),
        str(big),
        str(clip),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), FNST_JAX_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded: \n" in result.stdout, result.stdout  # nothing of JAX's
    assert run(npz, tmp_path / "jax", photo, big, clip, extra=flags) == 0
    for name in ("photo_candy.png", "big_candy.png"):
        got, expected = read(tmp_path / "onnx" / name), read(tmp_path / "jax" / name)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1, name
    _, frames = video.read_video(tmp_path / "onnx" / "clip_candy.mp4")
    _, expected_frames = video.read_video(tmp_path / "jax" / "clip_candy.mp4")
    pairs = list(zip(frames, expected_frames, strict=True))
    assert len(pairs) == 4
    for got, expected in pairs:
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 0.5
