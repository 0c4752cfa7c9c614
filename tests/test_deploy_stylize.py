"""`stylize.py --model x.onnx`: the onnxruntime engine (`deploy.onnx_runtime.OnnxStylizer`)
against the JAX engine through the same command line: images, colour transfer, video frames,
refusals (too large: no tiling; too small; bad files; flags fixed at export).

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

from fnst_jax import video
from fnst_jax.stylize import engine

onnxruntime = pytest.importorskip("onnxruntime")
from fnst_jax.deploy import onnx_graph, onnx_runtime  # noqa: E402 (needs onnx)

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


def test_images_above_max_pixels_are_refused_naming_the_option(models, tmp_path, capsys):
    _, onnx_path = models
    big = save(tmp_path / "in" / "big.png", natural_image(80, 70))  # 5600 px > 4096
    small = save(tmp_path / "in" / "small.png", natural_image(40, 40))
    extra = ["--max-pixels=4096", "--tile=64"]
    assert run(onnx_path, tmp_path / "out", big, small, extra=extra) == 1
    err = capsys.readouterr().err
    assert "big.png: stylization failed (70x80 image (5600 pixels) is above --max-pixels" in err
    assert "ONNX models are not tiled" in err
    assert (tmp_path / "out" / "small_candy.png").is_file()
    assert not (tmp_path / "out" / "big_candy.png").exists()


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


def test_defaults_match_the_jax_engine():
    assert onnx_runtime.DEFAULT_MAX_PIXELS == engine.DEFAULT_MAX_PIXELS
    assert onnx_runtime.DEFAULT_BATCH_SIZE == engine.DEFAULT_BATCH_SIZE
    from fnst_jax.transformer_net import SIZE_MULTIPLE

    assert onnx_runtime.SIZE_MULTIPLE == SIZE_MULTIPLE


def test_onnx_stylizer_imports_no_jax(models, tmp_path):
    _, onnx_path = models
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from fnst_jax.deploy.onnx_runtime import OnnxStylizer
        stylizer = OnnxStylizer(sys.argv[1])
        image = np.full((20, 30, 3), 128, np.uint8)
        styled = stylizer.stylize(image)
        assert styled.shape == image.shape and styled.dtype == np.uint8
        assert "jax" not in sys.modules and "flax" not in sys.modules, "JAX imported"
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script, str(onnx_path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
