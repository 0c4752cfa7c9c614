"""evaluate: the reported losses are the training objective's (on the model's output inside
the pixel range); the equivalent-iterations match; the report contract; bad inputs.

A random TransformerNet, a 4-layer random VGG and 32 px images keep every test in seconds.
"""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from fnst_jax import (
    brightness,
    evaluate,
    evaluation,
    evaluation_report,
    export,
    image_io,
    losses,
    quality,
    train_step,
    vgg_weights,
)
from fnst_jax import model_file as model_file_module
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams
from fnst_jax.transformer_net import TransformerNet, stylize_padded

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2", tv_weight=1e-2)
PAD = 4
SIZE = 32


def _shifted_model(scale: float, shift: float) -> TransformerNet:
    """A random TransformerNet whose output layer is scaled by `scale` and moved by `shift`.
    A fresh one returns about -1.5..1.5: shift 128 puts it inside the pixel range."""
    model = TransformerNet(rngs=nnx.Rngs(0))
    conv = model.out.conv
    conv.kernel[...] = conv.kernel[...] * scale
    conv.bias[...] = conv.bias[...] * scale + shift
    return model


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    """Output inside [0, 255], so evaluate's clip changes nothing and its loss must equal
    training's (which scores the output unclipped)."""
    return _shifted_model(1.0, 128.0)


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [np.sin(x / rng.uniform(2, 6) + rng.uniform(0, 6)) * np.cos(y / 4) for _ in range(3)]
    return np.clip(np.stack(channels, -1) * 90 + 128 + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(
        np.uint8
    )


@pytest.mark.slow
def test_losses_equal_the_training_objective(model, vgg4):
    """Pinned: what evaluate reports is perceptual_loss on stylize_padded, as training computes
    (for a model whose output stays in [0, 255]; outside it, see the next test)."""
    images = jnp.asarray(np.stack([_image(0, SIZE, SIZE), _image(1, SIZE, SIZE)]), jnp.float32)
    grams = style_grams(vgg4, jnp.asarray(_image(2, 36, 36), jnp.float32)[None], SPEC.style_layers)
    evaluator = evaluation.Evaluator(model, vgg4, SPEC, grams, PAD)
    stylized, results = evaluator.evaluate(images)

    expected_stylized = stylize_padded(model, images, PAD)
    assert 0 < float(expected_stylized.min()) and float(expected_stylized.max()) < 255
    np.testing.assert_allclose(stylized, expected_stylized, rtol=1e-4, atol=1e-3)
    content = content_targets(vgg4, images, SPEC)
    _, batch_terms = perceptual_loss(vgg4, expected_stylized, content, grams, SPEC)
    for name, key in evaluation.TERM_KEYS.items():
        # Same-size images: the batch loss (what a training step sees) is the per-image mean.
        mean = np.mean([r[key] for r in results])
        assert mean == pytest.approx(float(batch_terms[name]), rel=1e-4), name
    for i, result in enumerate(results):
        _, terms = perceptual_loss(
            vgg4, expected_stylized[i : i + 1], content[i : i + 1], grams, SPEC
        )
        assert result["total_loss"] == pytest.approx(float(terms["total"]), rel=1e-4)
        assert result["total_loss"] == pytest.approx(
            result["content_loss"] + result["style_loss"] + result["tv_loss"], rel=1e-5
        )
        assert result["tv_loss"] > 0 and result["seconds"] > 0
    assert results[0]["content_loss"] != pytest.approx(results[1]["content_loss"], rel=1e-3)

    # And the training code's own validation function gives the same numbers.
    graphdef, params = nnx.split(model, nnx.Param)
    step_config = train_step.StepConfig(graphdef, SPEC, PAD, jnp.float32)
    eval_fn = train_step.make_eval_fn(step_config, clip_to_pixels=True)
    train_terms, _ = eval_fn(nnx.to_pure_dict(params), images, vgg4, grams)
    assert np.mean([r["total_loss"] for r in results]) == pytest.approx(
        float(train_terms["total"]), rel=1e-4
    )


@pytest.mark.slow
def test_model_output_is_scored_inside_the_pixel_range(vgg4):
    """A model whose raw output leaves [0, 255] is scored (and shown) as stylize.py writes it:
    clipped, the constraint the optimiser's image is held to."""
    model = _shifted_model(300.0, 128.0)
    images = jnp.asarray(np.stack([_image(0, SIZE, SIZE)]), jnp.float32)
    grams = style_grams(vgg4, jnp.asarray(_image(2, 36, 36), jnp.float32)[None], SPEC.style_layers)
    raw = stylize_padded(model, images, PAD)
    assert float(raw.min()) < -50 and float(raw.max()) > 300  # well outside, both ends
    stylized, (result,) = evaluation.Evaluator(model, vgg4, SPEC, grams, PAD).evaluate(images)

    clipped = jnp.clip(raw, 0, 255)
    np.testing.assert_allclose(stylized, clipped, rtol=1e-4, atol=1e-3)
    content = content_targets(vgg4, images, SPEC)
    _, clipped_terms = perceptual_loss(vgg4, clipped, content, grams, SPEC)
    _, raw_terms = perceptual_loss(vgg4, raw, content, grams, SPEC)
    assert result["total_loss"] == pytest.approx(float(clipped_terms["total"]), rel=1e-4)
    assert result["total_loss"] != pytest.approx(float(raw_terms["total"]), rel=1e-2)


CURVE = {10: 3.0, 30: 2.0, 100: 1.0, 300: 0.5}


@pytest.mark.parametrize(
    ("model_total", "bound", "iterations", "equivalent"),
    [
        # Between two counts: linear in log(iterations). 2.5 is halfway from 3.0 (at 10) to
        # 2.0 (at 30), so sqrt(10 * 30); 1.25 is 3/4 of the way from 30 to 100.
        (2.5, "interpolated", 17, np.sqrt(10 * 30)),
        (1.25, "interpolated", 74, 30 * (100 / 30) ** 0.75),
        (1.0, "interpolated", 100, 100.0),  # equal at a count: exactly that count
        (3.0, "interpolated", 10, 10.0),  # equal at the first count
        (3.5, "fewer_than", 10, None),  # the optimiser is below the model at every count
        (0.2, "more_than", 300, None),  # the model is below the optimiser at every count
    ],
)
def test_equivalent_iterations_on_a_monotone_curve(model_total, bound, iterations, equivalent):
    match = evaluation_report.equivalent_iterations(model_total, CURVE)
    assert (match.bound, match.iterations) == (bound, iterations)
    if equivalent is None:
        assert match.equivalent is None
    else:
        assert match.equivalent == pytest.approx(equivalent, rel=1e-9)


def test_equivalent_iterations_on_a_non_monotone_curve():
    """The first crossing counts: the optimiser reaches the model at the first segment that
    comes down to its loss, whatever the curve does later."""
    bumpy = {1: 4.0, 2: 2.0, 5: 3.0, 10: 1.0}  # dips below 2.5 at 2, back above at 5
    match = evaluation_report.equivalent_iterations(2.5, bumpy)
    assert match.bound == "interpolated"
    assert match.equivalent == pytest.approx(2 ** (1.5 / 2.0))  # between 1 (4.0) and 2 (2.0)
    assert match.iterations == 2  # 1.68 rounded
    # Below the model at the first count, above it later: still "fewer than the first count".
    assert evaluation_report.equivalent_iterations(1.5, {1: 1.0, 2: 2.0}).bound == "fewer_than"
    # Unordered mappings are read in count order.
    assert evaluation_report.equivalent_iterations(2.5, {5: 3.0, 1: 4.0, 10: 1.0, 2: 2.0}) == match
    assert evaluation_report.equivalent_iterations(1.0, {}) is None
    with pytest.raises(ValueError, match="positive"):
        evaluation_report.equivalent_iterations(1.0, {0: 2.0, 10: 0.5})


def test_summary_and_sentences():
    results = [
        {"content_loss": 1, "style_loss": 2, "tv_loss": 0, "total_loss": 3, "seconds": 0.5,
         "baseline": {"5": 4.0, "10": 2.0}},
        {"content_loss": 3, "style_loss": 2, "tv_loss": 0, "total_loss": 5, "seconds": 1.5,
         "baseline": {"5": 6.0, "10": 4.0}},
    ]  # fmt: skip
    summary = evaluation_report.summarize(results, (5, 10))
    assert summary["total_loss"] == 4 and summary["content_loss"] == 2
    assert summary["seconds_per_image"] == 1.0
    assert summary["baseline"] == {"5": 5.0, "10": 3.0}
    assert summary["ratio"] == {"5": 0.8, "10": pytest.approx(4 / 3)}
    # The mean model (4) on the mean curve (5 at 5, 3 at 10): halfway in log-iterations.
    assert summary["matched_iterations_bound"] == "interpolated"
    assert summary["equivalent_iterations"] == pytest.approx(np.sqrt(5 * 10))
    assert summary["matched_iterations"] == 7
    sentence = evaluation_report.matched_sentence
    assert "worth ~70.7 iterations of x (its loss lies between the optimiser's at 50 and 100" in (
        sentence(1.0, {"50": 1.5, "100": 0.5}, "x")
    )
    assert "worth 50 iterations of x (an exact match)" in sentence(1.0, {"50": 1.0}, "x")
    assert "fewer than 50 iteration(s) of x" in sentence(1.0, {"50": 0.5, "100": 0.4}, "x")
    assert "more than 100 iterations of x" in sentence(0.1, {"50": 2.0, "100": 0.9}, "x")
    assert evaluate.parse_iterations("300, 50,100") == (50, 100, 300)
    assert evaluate.parse_iterations("none") == ()
    assert evaluate.DEFAULT_BASELINE_ITERATIONS[:4] == (1, 2, 5, 10)
    assert evaluate.DEFAULT_BASELINE_ITERATIONS[-3:] == (50, 100, 300)


@pytest.fixture
def model_file(tmp_path, model):
    style = tmp_path / "style.png"
    Image.fromarray(_image(2, 36, 44)).save(style)
    meta = {
        "pad": PAD,
        "image_size": SIZE,
        "style_image": str(style),
        "style_size": 36,
        "loss": dataclasses.asdict(SPEC),
        "vgg": {"weights": "random", "preprocessing": "torch"},
        "step": 1,
        "config": {},
    }
    return export.save_model(tmp_path / "run" / "model.npz", model, meta)


@pytest.mark.slow
def test_cli_report(model_file, small_vgg, model, tmp_path, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(
        vgg_weights, "load_vgg", lambda w, p=None: asked.append((w, p)) or small_vgg
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_image(3, 40, 48)).save(photos / "a.png")
    Image.fromarray(_image(4, 36, 36)).save(photos / "b.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    report = tmp_path / "out" / "eval.json"
    argv = [
        "evaluate", "--model", str(model_file.parent),
        "--images", str(photos), str(tmp_path / "gone.png"),
        "--baseline-iterations", "4,2", "--json", str(report), "--image-size", str(SIZE),
    ]  # fmt: skip
    assert evaluate.main(argv) == 1  # two bad inputs, the others evaluated
    assert asked == [("random", "torch")]
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert f"error: {tmp_path / 'gone.png'}: no such file or directory" in errors
    assert any(line.startswith(f"error: {photos / 'broken.jpg'}: ") for line in errors)
    assert "Traceback" not in captured.err
    assert "opt@2" in captured.out and "mean (2 images)" in captured.out

    document = json.loads(report.read_text())
    assert [r["path"] for r in document["images"]] == [str(photos / "a.png"), str(photos / "b.jpg")]
    for result in document["images"]:
        assert result["size"] == [SIZE, SIZE]  # training's view: shorter side + centre crop
        assert set(result["baseline"]) == {"2", "4"}
        assert result["baseline"]["4"] <= result["baseline"]["2"]
        for key in ("content_loss", "style_loss", "tv_loss", "total_loss", "seconds"):
            assert np.isfinite(result[key])
    summary = document["summary"]
    assert summary["total_loss"] == pytest.approx(
        np.mean([r["total_loss"] for r in document["images"]])
    )
    baseline = {int(k): v for k, v in summary["baseline"].items()}
    match = evaluation_report.equivalent_iterations(summary["total_loss"], baseline)
    assert summary["matched_iterations"] == match.iterations
    assert summary["matched_iterations_bound"] == match.bound
    assert summary["equivalent_iterations"] == match.equivalent
    assert "the model is worth" in captured.out
    assert document["loss"]["style_layers"] == list(SPEC.style_layers)
    assert len(document["failed"]) == 2

    # The numbers are the training objective on training's view of each image.
    image = evaluation.prepare_image(np.asarray(Image.open(photos / "a.png")), SIZE)
    grams = evaluation.load_style_grams(small_vgg, model_file.parent.parent / "style.png", 36,
                                      SPEC.style_layers)  # fmt: skip
    batch = jnp.asarray(image, jnp.float32)[None]
    stylized = losses.to_pixel_range(stylize_padded(model, batch, PAD))
    content = content_targets(small_vgg, batch, SPEC)
    _, terms = perceptual_loss(small_vgg, stylized, content, grams, SPEC)
    assert document["images"][0]["total_loss"] == pytest.approx(float(terms["total"]), rel=1e-4)

    # And the quality figures are `quality.figures` on the same pair, the style image (not
    # its training size) at the evaluated image's longest side; the summary holds their means.
    style = np.asarray(Image.open(model_file.parent.parent / "style.png"))
    expected = quality.figures(
        small_vgg, batch, stylized, quality.StyleTargets(small_vgg, style).at(SIZE)
    )
    for key in quality.KEYS:
        assert document["images"][0][key] == pytest.approx(float(expected[key][0]), rel=1e-4)
        mean = np.mean([r[key] for r in document["images"]])
        assert summary[key] == pytest.approx(mean, rel=1e-6)
    assert summary["style_reduction"] > 0 and summary["content_change"] > 0
    assert document["quality"]["style_layers"] == list(quality.STYLE_LAYERS)
    assert document["quality"]["content_layer"] == quality.CONTENT_LAYER
    luma = style.astype(np.float64) @ np.array(quality.LUMA_WEIGHTS)
    assert document["quality"]["style_luminance"] == pytest.approx(luma.mean(), rel=1e-5)
    for column in evaluation_report.QUALITY_COLUMNS:
        assert column in captured.out
    assert "mean luma: outputs" in captured.out

    grid = np.asarray(Image.open(report.with_name("eval_grid.png")))
    assert grid.shape == (2 * evaluate.GRID_ROW_HEIGHT, 2 * evaluate.GRID_ROW_HEIGHT, 3)

    # Nothing is overwritten without --overwrite.
    assert evaluate.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {report}: already exists (pass --overwrite to replace it)"
    )


@pytest.mark.slow
def test_cli_own_size_without_baseline(model_file, small_vgg, tmp_path, monkeypatch, capsys):
    """The default: each image at its own size (a model without a native size runs at it)."""
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: small_vgg)
    Image.fromarray(_image(5, 36, 44)).save(tmp_path / "c.png")
    report = tmp_path / "full.json"
    argv = [
        "evaluate", "--model", str(model_file), "--images", str(tmp_path / "c.png"),
        "--baseline-iterations", "none", "--json", str(report), "--no-grid",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    document = json.loads(report.read_text())
    assert document["images"][0]["size"] == [36, 44]
    assert document["images"][0]["baseline"] == {}
    summary = document["summary"]
    assert summary["baseline"] == {} and summary["matched_iterations"] is None
    assert summary["matched_iterations_bound"] is None and summary["equivalent_iterations"] is None
    assert document["image_size"] is None
    assert not (tmp_path / "full_grid.png").exists()
    # At full size the style image is taken at the image's own longest side (44 px).
    assert document["images"][0]["style_reduction"] == summary["style_reduction"]
    assert document["stroke_scale"] == "auto" and document["native_size"] is None
    # Both views of a 44 px image are the image itself: the full-size figures, of the
    # written (rounded) pixels.
    for view in ("256", "512"):
        assert summary["views"][view]["style_reduction"] == pytest.approx(
            summary["style_reduction"], rel=1e-2
        )
    assert "style@256" in capsys.readouterr().out
    evaluator, _ = evaluation.setup(  # the same setup main runs, to reach its style targets
        {
            "model": str(model_file), "style-layers": None, "vgg-weights": None,
            "vgg-preprocessing": None, "style": None, "style-size": None, "full-size": False,
            "image-size": None, "longest-side": None, "baseline-optimizer": "lbfgs",
            "baseline-init": "content", "stroke-scale": None, "upsampler": "bicubic",
            "detail-pass": True, "keep-brightness": None,
        },
        None,
    )  # fmt: skip
    photo = np.asarray(Image.open(tmp_path / "c.png"))
    stylized, _ = evaluator.stylize(jnp.asarray(photo, jnp.float32)[None])
    # as stylize.py writes it: rounded, the photo's brightness kept
    written = brightness.keep(image_io.to_uint8(np.asarray(stylized[0])), photo)
    targets = evaluator.quality_targets.at(44)
    expected = quality.figures(small_vgg, photo[None], written[None], targets)
    assert summary["style_reduction"] == pytest.approx(float(expected["style_reduction"][0]))


def test_cli_longest_side(model_file, small_vgg, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: small_vgg)
    Image.fromarray(_image(5, 36, 44)).save(tmp_path / "c.png")
    report = tmp_path / "longest.json"
    argv = [
        "evaluate", "--model", str(model_file), "--images", str(tmp_path / "c.png"),
        "--longest-side", "66", "--baseline-iterations", "none", "--json", str(report), "--no-grid",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    document = json.loads(report.read_text())
    # The whole image, scaled by 1.5 (no crop), and the style taken at 66 px.
    assert document["images"][0]["size"] == [54, 66]
    assert document["longest_side"] == 66 and document["image_size"] is None
    # One view at a time.
    for other in (["--image-size", "32"], ["--full-size"]):
        assert evaluate.main([*argv, *other, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot be combined" in err and "--longest-side" in err


def test_cli_refuses_vgg_weights_too_shallow_for_the_quality_figures(
    model_file, vgg4, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: vgg4)
    Image.fromarray(_image(5, 36, 44)).save(tmp_path / "c.png")
    argv = ["evaluate", "--model", str(model_file), "--images", str(tmp_path / "c.png"),
            "--baseline-iterations", "none", "--no-grid"]  # fmt: skip
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quality figures need VGG layers" in err and "relu3_1" in err


def test_cli_bad_model(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    for model_path, reason in (
        (tmp_path / "missing.npz", "model file not found"),
        (corrupt, "not an fnst_jax model file"),
        (tmp_path, "folder has neither an exported model"),
    ):
        argv = ["evaluate", "--model", str(model_path), "--images", str(tmp_path / "x.png"),
                "--no-grid"]  # fmt: skip
        assert evaluate.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and reason in err, err
        assert str(model_path) in err


def test_cli_own_size_runs_at_the_native_size_and_longest_side_does_not(
    model_file, small_vgg, tmp_path, monkeypatch
):
    """A model with a native size is scored as stylize.py writes it (stroke scale auto: the
    network at the native size, then upsampled); --longest-side keeps the network at the
    scored size."""
    monkeypatch.setattr(vgg_weights, "load_vgg", lambda w, p=None: small_vgg)
    arrays, meta = model_file_module.read_model(model_file)
    native = model_file_module.write_model(
        tmp_path / "native.npz", arrays, {**meta, "native_size": 22}
    )
    photo = _image(5, 36, 44)
    Image.fromarray(photo).save(tmp_path / "c.png")
    common = ["--model", str(native), "--images", str(tmp_path / "c.png"),
              "--baseline-iterations", "none", "--no-grid"]  # fmt: skip
    assert evaluate.main(["evaluate", *common, "--json", str(tmp_path / "own.json")]) == 0
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["images"][0]["size"] == [36, 44]
    assert own["native_size"] == 22 and own["stroke_scale"] == "auto"
    flags_dict = {
        "model": str(native), "style-layers": None, "vgg-weights": None,
        "vgg-preprocessing": None, "style": None, "style-size": None, "full-size": False,
        "image-size": None, "longest-side": None, "baseline-optimizer": "lbfgs",
        "baseline-init": "content", "stroke-scale": None, "upsampler": "bicubic",
            "detail-pass": True, "keep-brightness": None,
    }  # fmt: skip
    evaluator, _ = evaluation.setup(flags_dict, None)
    working = image_io.resize(photo, (22, 18))
    stylized, _ = evaluator.stylize(jnp.asarray(working, jnp.float32)[None])
    # The detail pass: at twice the working size, here the image's own (44x36).
    first = image_io.to_uint8(np.asarray(stylized[0]))
    upsampled = image_io.resize(first, (44, 36), resample=Image.Resampling.BICUBIC)
    detailed, _ = evaluator.stylize(jnp.asarray(upsampled, jnp.float32)[None])
    output = brightness.keep(image_io.to_uint8(np.asarray(detailed[0])), photo)
    (expected,) = quality.measure(evaluator.quality_targets, photo[None], output[None])
    assert own["images"][0]["style_reduction"] == pytest.approx(expected["style_reduction"])

    longest = ["evaluate", *common, "--longest-side", "44", "--json", str(tmp_path / "l.json")]
    assert evaluate.main(longest) == 0
    at_44 = json.loads((tmp_path / "l.json").read_text())
    assert at_44["stroke_scale"] == 1.0 and at_44["images"][0]["size"] == [36, 44]
    assert at_44["images"][0]["style_reduction"] != own["images"][0]["style_reduction"]
