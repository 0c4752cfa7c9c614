"""evaluate --video: the warping errors reported are `temporal`'s on the clip's decoded
frames, the model's frames are the stylize engine's, the blend is stylize.py's; other
stylized files are scored alike or named when they do not match; bad input, clear errors.

A random test model (outputs spanning 0..255), an 8-layer random VGG and 64x48 clips of a
few frames keep it in seconds.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flax import nnx
from PIL import Image
from stylize_helpers import make_test_model, natural_image

from fnst_jax import evaluate, export, temporal, vgg_weights, video
from fnst_jax.losses import LossSpec
from fnst_jax.stylize import loading
from fnst_jax.transformer_net import TransformerNet

pytest.importorskip("cv2")
pytestmark = pytest.mark.usefixtures("fast_compile")

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2", tv_weight=1e-2)
WIDTH, HEIGHT, FRAMES = 64, 48, 6


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A camera moving 2 px right per frame over a textured image."""
    scene = natural_image(HEIGHT, WIDTH + 2 * FRAMES, seed=3)
    frames = [scene[:, 2 * i : 2 * i + WIDTH] for i in range(FRAMES)]
    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    video.write_video(path, frames, video.VideoInfo((WIDTH, HEIGHT), 12.0, FRAMES))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    style = folder / "style.png"
    Image.fromarray(natural_image(36, 44, seed=9)).save(style)
    meta = {
        "pad": 4,
        "image_size": 32,
        "style_image": str(style),
        "style_size": 36,
        "loss": dataclasses.asdict(SPEC),
        "vgg": {"weights": "random", "preprocessing": "torch"},
    }
    return export.save_model(folder / "model.npz", make_test_model(), meta)


def _write(path, frames):
    video.write_video(
        path, frames, video.VideoInfo((frames[0].shape[1], frames[0].shape[0]), 12.0, len(frames))
    )
    return path


def _flickering(frames):
    return [
        np.clip(f.astype(int) + (12 if i % 2 else -12), 0, 255).astype(np.uint8)
        for i, f in enumerate(frames)
    ]


@pytest.mark.slow
def test_report_with_model_blend_and_files(
    clip, model_file, small_vgg, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: small_vgg)
    frames = list(video.read_video(clip)[1])
    flicker = _write(tmp_path / "flicker.mp4", _flickering(frames))
    short = _write(tmp_path / "short.mp4", frames[:4])
    report = tmp_path / "out" / "pan.json"
    argv = [
        "evaluate", "--model", str(model_file), "--video", str(clip), "--temporal-blend", "0.5",
        "--stylized", str(flicker), "--stylized", str(short), "--json", str(report),
    ]  # fmt: skip
    assert evaluate.main(argv) == 1  # short.mp4 failed, the others are scored
    captured = capsys.readouterr()
    assert f"error: {short}: has 4 frames, fewer than the clip" in captured.err
    assert "Traceback" not in captured.err
    assert "input (floor)" in captured.out and "blended (alpha 0.5)" in captured.out

    document = json.loads(report.read_text())
    assert list(document["videos"]) == ["input", "model", "blended", str(flicker)]
    assert document["frames"] == FRAMES and len(document["visible_fraction"]) == FRAMES - 1
    assert len(document["failed"]) == 1

    # The same numbers, recomputed: the stylize engine's frames (as evaluate batches them),
    # stylize.py's blend, temporal's scores on the decoded frames.
    stylizer = loading.load_stylizer(model_file)
    batch = stylizer.batch_size
    stylized = [
        s for i in range(0, FRAMES, batch) for s in stylizer.stylize_batch(frames[i : i + batch])
    ]
    blender = temporal.TemporalBlender(0.5)
    blended = [blender(f, s) for f, s in zip(frames, stylized, strict=True)]
    expected, visible = temporal.score_videos(
        frames,
        {
            "input": frames,
            "model": stylized,
            "blended": blended,
            "flicker": list(video.read_video(flicker)[1]),
        },
    )
    assert document["visible_fraction"] == pytest.approx(visible)
    for label, key in (
        ("input", "input"),
        ("model", "model"),
        ("blended", "blended"),
        (str(flicker), "flicker"),
    ):
        entry = document["videos"][label]
        assert entry["per_frame"]["warping_error"] == pytest.approx(expected[key].squared, rel=1e-6)
        assert entry["per_frame"]["warping_mae"] == pytest.approx(expected[key].absolute, rel=1e-6)
        assert entry["warping_error"] == pytest.approx(expected[key].warping_error, rel=1e-6)
    floor = document["videos"]["input"]["warping_error"]
    assert document["videos"]["model"]["relative_to_input"] == pytest.approx(
        document["videos"]["model"]["warping_error"] / floor
    )
    assert (
        document["videos"]["blended"]["warping_error"]
        < document["videos"]["model"]["warping_error"]
    )
    assert document["videos"][str(flicker)]["warping_error"] > 3 * floor

    # The loss terms of every stylized video, on frames 0 and 4 (--style-loss-every 4).
    for label in ("model", "blended", str(flicker)):
        entry = document["videos"][label]
        assert entry["sampled_frames"]["frame"] == [0, 4]
        assert entry["style_loss"] == pytest.approx(np.mean(entry["sampled_frames"]["style_loss"]))
        assert entry["style_loss"] > 0 and np.isfinite(entry["total_loss"])
    assert "style_loss" not in document["videos"]["input"]
    assert document["style"]["loss"]["style_layers"] == list(SPEC.style_layers)

    plot = np.asarray(Image.open(report.with_name("pan_warping.png")))
    assert plot.ndim == 3 and plot.shape[0] > 100
    assert evaluate.main(argv) == 2  # nothing is overwritten without --overwrite
    assert f"{report}: already exists" in capsys.readouterr().err


def test_files_only_without_a_model(clip, tmp_path, capsys):
    frames = list(video.read_video(clip)[1])
    copy = _write(tmp_path / "copy.mp4", frames)
    report = tmp_path / "files.json"
    argv = ["evaluate", "--video", str(clip), "--stylized", str(copy), "--frames", "4",
            "--json", str(report), "--no-plot"]  # fmt: skip
    assert evaluate.main(argv) == 0, capsys.readouterr().err
    document = json.loads(report.read_text())
    assert list(document["videos"]) == ["input", str(copy)] and document["frames"] == 4
    assert document["model"] is None and document["style"] is None
    assert len(document["videos"][str(copy)]["per_frame"]["warping_error"]) == 3
    assert not (tmp_path / "files_warping.png").exists()


def test_bad_inputs_are_named(clip, tmp_path, capsys):
    frames = list(video.read_video(clip)[1])
    small = _write(tmp_path / "small.mp4", [f[:32, :32] for f in frames])
    long = _write(tmp_path / "long.mp4", frames + frames[:2])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")

    def run(*arguments):
        plot = [] if "--plot" in arguments else ["--no-plot"]
        code = evaluate.main(["evaluate", *plot, *arguments])
        return code, capsys.readouterr().err

    code, err = run("--video", str(clip), "--stylized", str(small), "--stylized", str(long),
                    "--stylized", str(broken))  # fmt: skip
    assert code == 1
    assert f"error: {small}: frames are 32x32, the clip's {WIDTH}x{HEIGHT}" in err
    assert f"error: {long}: has more frames than the clip ({FRAMES})" in err
    assert f"error: {broken}: cannot decode video" in err
    assert "Traceback" not in err

    for arguments, message in (
        (
            ("--video", str(tmp_path / "gone.mp4"), "--stylized", str(long)),
            f"{tmp_path / 'gone.mp4'}: no such file",
        ),
        (("--video", str(broken), "--stylized", str(long)), f"{broken}: cannot decode video"),
        (("--video", str(clip)), "--video needs --model and/or --stylized"),
        (
            ("--video", str(clip), "--stylized", str(long), "--images", "x.png"),
            "cannot be combined",
        ),
        (
            ("--video", str(clip), "--stylized", str(long), "--temporal-blend", "0.5"),
            "it needs --model",
        ),
        (("--video", str(clip), "--model", "m.npz", "--temporal-blend", "1.5"), "between 0 and 1"),
        (("--video", str(clip), "--stylized", str(long), "--frames", "1"), "--frames"),
        (("--video", str(clip), "--stylized", str(long), "--plot", "p.jpg"), "give a .png path"),
    ):
        code, err = run(*arguments)
        assert code == 2 and err.startswith("error: ") and message in err, (arguments, err)


@pytest.mark.slow
def test_one_style_of_a_multi_style_model(clip, small_vgg, tmp_path, monkeypatch, capsys):
    """--model-style picks a style of a multi-style model: its frames, and its style loss
    against that style's image and balanced weight (the image mode's setup)."""
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: small_vgg)
    styles = []
    for name, seed in (("dots", 9), ("waves", 4)):
        path = tmp_path / f"{name}.png"
        Image.fromarray(natural_image(36, 44, seed=seed)).save(path)
        styles.append({"name": name, "image": str(path), "thumbnail": ""})
    meta = {
        "pad": 4,
        "image_size": 32,
        "style_image": styles[0]["image"],
        "style_size": 36,
        "styles": styles,
        "loss": dataclasses.asdict(dataclasses.replace(SPEC, style_weights=(1.0, 2.0))),
        "vgg": {"weights": "random", "preprocessing": "torch"},
    }
    model_file = export.save_model(
        tmp_path / "duo.npz", TransformerNet(num_styles=2, rngs=nnx.Rngs(0)), meta
    )
    report = tmp_path / "duo.json"
    argv = ["evaluate", "--model", str(model_file), "--video", str(clip), "--json", str(report)]
    assert evaluate.main(argv) == 2  # which style? (the error lists them)
    assert "choose one with --model-style" in capsys.readouterr().err
    assert evaluate.main([*argv, "--model-style", "waves"]) == 0, capsys.readouterr().err
    document = json.loads(report.read_text())
    assert document["style"]["style_image"] == styles[1]["image"]
    assert document["style"]["loss"]["style_weight"] == 2.0
