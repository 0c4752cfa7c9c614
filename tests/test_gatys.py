"""Gatys baseline: exact initialisation, L-BFGS beats Adam, the loss is training's, the image
never leaves the pixel range, CLI rules.

Tiny shapes and a 4-layer random VGG; the spec and image shape are shared by every test so
the jitted optimiser loop compiles once per optimizer.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fnst_jax import gatys, vgg_weights
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2")
H, W = 32, 40


def _smooth_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A deterministic image with structure at several scales (not just white noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [
        np.sin(x / rng.uniform(2, 6) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(2, 6))
        for _ in range(3)
    ]
    image = (np.stack(channels, -1) * 90 + 128) + rng.normal(0, 10, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def problem(vgg4):
    content = _smooth_image(0)
    grams = style_grams(vgg4, _smooth_image(1, 36, 36)[None].astype(np.float32), SPEC.style_layers)
    return vgg4, content, grams


def test_zero_iterations_is_the_initialisation(problem):
    vgg, content, grams = problem
    image, records = gatys.optimize(vgg, content, grams, SPEC, 0, "lbfgs", "content")
    np.testing.assert_array_equal(np.asarray(image[0]), content.astype(np.float32))
    assert set(records) == {0}
    assert records[0]["content"] == pytest.approx(0.0, abs=1e-6)
    assert records[0]["style"] > 0

    noise, _ = gatys.optimize(vgg, content, grams, SPEC, 0, "adam", "noise", seed=3)
    again, _ = gatys.optimize(vgg, content, grams, SPEC, 0, "adam", "noise", seed=3)
    noise = np.asarray(noise)
    np.testing.assert_array_equal(noise, np.asarray(again))
    assert noise.shape == (1, H, W, 3) and noise.min() >= 0 and noise.max() <= 255
    assert np.abs(noise[0] - content).mean() > 30


@pytest.mark.slow
def test_lbfgs_decreases_monotonically_and_beats_adam(problem):
    vgg, content, grams = problem
    record_at = range(0, 21, 4)
    _, lbfgs = gatys.optimize(vgg, content, grams, SPEC, 20, "lbfgs", record_at=record_at)
    _, adam = gatys.optimize(vgg, content, grams, SPEC, 20, "adam", record_at=record_at)
    totals = [lbfgs[i]["total"] for i in record_at]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(totals, totals[1:], strict=False)), totals
    assert totals[-1] < 0.5 * totals[0], totals
    assert totals[-1] < adam[20]["total"], (totals, [adam[i]["total"] for i in record_at])
    assert lbfgs[20]["seconds"] >= lbfgs[0]["seconds"] >= 0


def test_recorded_loss_is_the_training_objective(problem):
    """The optimiser's numbers are `perceptual_loss` of the image it returns, with the
    content image's own features as the content target."""
    vgg, content, grams = problem
    logged = []
    image, records = gatys.optimize(
        vgg,
        content,
        grams,
        SPEC,
        8,
        "adam",
        learning_rate=2.0,
        log_every=4,
        log=lambda i, terms: logged.append(i),
    )
    target = content_targets(vgg, content[None].astype(np.float32), SPEC)
    _, terms = perceptual_loss(vgg, image, target, grams, SPEC)
    for name in ("content", "style", "tv", "total"):
        assert records[8][name] == pytest.approx(float(terms[name]), rel=1e-4, abs=1e-7)
    assert logged == [0, 4, 8]


@pytest.mark.parametrize(("optimizer", "learning_rate"), [("lbfgs", None), ("adam", 20.0)])
def test_image_stays_in_the_pixel_range(problem, optimizer, learning_rate):
    """The baseline is held to what a model can output: every step is projected onto
    [0, 255]. A black-and-white noise style pushes pixels far past both bounds (unprojected,
    over a quarter of them leave the range within 12 L-BFGS steps); they must stop on the bounds,
    and the recorded loss is the returned image's."""
    vgg, content, _ = problem
    noise = np.random.default_rng(5).integers(0, 2, (36, 36, 3)) * 255.0
    grams = style_grams(vgg, noise[None].astype(np.float32), SPEC.style_layers)
    image, records = gatys.optimize(
        vgg, content, grams, SPEC, 12, optimizer, learning_rate=learning_rate, record_at=(0,)
    )
    image = np.asarray(image)
    assert image.min() >= 0.0 and image.max() <= 255.0
    on_bounds = np.mean((image == 0) | (image == 255))
    assert on_bounds > np.mean((content == 0) | (content == 255)) + 0.03  # pushed onto them
    assert image.min() == 0.0 and image.max() == 255.0
    assert records[12]["total"] < 0.1 * records[0]["total"]
    target = content_targets(vgg, content[None].astype(np.float32), SPEC)
    _, terms = perceptual_loss(vgg, image, target, grams, SPEC)
    assert records[12]["total"] == pytest.approx(float(terms["total"]), rel=1e-4)


def test_initial_image_is_projected(problem):
    vgg, content, grams = problem
    stray = content.astype(np.float32) * 1.4 - 30  # about -30..327
    image, _ = gatys.optimize(vgg, stray, grams, SPEC, 0)
    np.testing.assert_array_equal(np.asarray(image[0]), np.clip(stray, 0, 255))
    assert stray.min() < 0 and stray.max() > 255


def test_bad_arguments(problem):
    vgg, content, grams = problem
    with pytest.raises(ValueError, match="record_at"):
        gatys.optimize(vgg, content, grams, SPEC, 5, record_at=(10,))
    with pytest.raises(ValueError, match="unknown optimizer"):
        gatys.optimize(vgg, content, grams, SPEC, 5, "sgd")
    deep = LossSpec(style_layers=("relu3_1",), content_layer="relu2_2")
    with pytest.raises(ValueError, match="deeper than the weights"):
        gatys.optimize(vgg, content, grams, deep, 5)
    assert gatys.min_image_side(SPEC) == 2
    assert gatys.min_image_side(LossSpec()) == 16


def test_cli(problem, tmp_path, monkeypatch, capsys):
    vgg, content, _ = problem
    asked = []
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: asked.append((w, p)) or vgg)
    Image.fromarray(content).save(tmp_path / "content.png")
    Image.fromarray(_smooth_image(1, 36, 36)).save(tmp_path / "style.png")
    output = tmp_path / "out" / "slow.png"
    argv = [
        "gatys", "--style", str(tmp_path / "style.png"), "--content", str(tmp_path / "content.png"),
        "--output", str(output), "--iterations", "4", "--log-every", "2",
        "--style-layers", "relu1_1,relu2_1", "--content-layer", "relu2_2",
        "--vgg-weights", "some.npz",
    ]  # fmt: skip
    assert gatys.main(argv) == 0
    assert asked == [("some.npz", None)]
    out = capsys.readouterr().out
    assert "iter      0" in out and "iter      4" in out and f"wrote {output}" in out
    result = np.asarray(Image.open(output))
    assert result.shape == (H, W, 3) and result.dtype == np.uint8
    assert not np.array_equal(result, content)  # it moved

    # Nothing is overwritten without being asked; errors are one line, exit 2.
    assert gatys.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {output}: already exists (pass --overwrite to replace it)"
    missing = [*argv[:3], "--content", str(tmp_path / "nope.png"), *argv[5:], "--overwrite"]
    assert gatys.main(missing) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.png" in err and "\n" not in err
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    corrupt = [*argv[:3], "--content", str(tmp_path / "bad.jpg"), *argv[5:], "--overwrite"]
    assert gatys.main(corrupt) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'bad.jpg'}: ") and "\n" not in err
