"""The deployment exports (`fnst_jax.deploy`): the ONNX graph and the serialized JAX program
against the JAX forward (`stylize_padded`), the check every export runs, and the command.

The bound throughout is the exporter's: after rounding to uint8, no value may differ from
the JAX forward's by more than 1/255 (`verify.MAX_LEVEL_DIFFERENCE`). Measured on the test
model (outputs spanning 0..255): float32 ONNX and StableHLO within 0.001 before rounding,
float16 ONNX within 0.4 (verify's module docstring). The tiling functions of an ONNX file are
checked against the JAX engine's box form (the same tile, box, interior and statistics).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS_DIR, REAL_VGG_NPZ, SHARED_DATA
from flax import nnx
from PIL import Image
from stylize_helpers import (
    TEST_PAD,
    make_test_model,
    natural_image,
    save,
    save_multi_style_test_model,
    save_test_model,
)
from stylize_helpers import run as run_stylize

from fnst_jax import deploy, export, image_io, model_file
from fnst_jax.deploy import FLOAT_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME, cli, stablehlo, verify
from fnst_jax.errors import UserError
from fnst_jax.stylize import Stylizer, loading
from fnst_jax.transformer_net import TransformerNet, stylize_padded

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from fnst_jax.deploy import onnx_graph  # noqa: E402 (needs onnx)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("fast_compile")

# The standard operators the graph may use (onnx_graph's module docstring).
STANDARD_OPS = {
    *("Pad", "Conv", "InstanceNormalization", "Relu", "Resize", "Add", "Slice", "Transpose"),
    *("Cast", "Round", "Clip", "Shape", "Min", "Sub", "Neg", "Mod", "Concat", "Identity"),
}
# ... and those the tiling functions add (Constant: functions have no initializers).
FUNCTION_OPS = {
    *("Constant", "Gather", "Range", "Div", "Mul", "Max", "Where", "Greater", "GreaterOrEqual"),
    *("Unsqueeze", "ReduceSum", "Flatten", "Reshape", "Sqrt", "Reciprocal"),
}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_test_model(tmp_path_factory.mktemp("model") / "candy.npz")


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    return make_test_model()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "candy.onnx"
    properties = {"style": "candy", "fnst_jax_version": "test"}
    path.write_bytes(onnx_graph.serialize(model, TEST_PAD, properties))
    return path


def reference(model, images, pad=TEST_PAD):
    return np.asarray(stylize_padded(model, images, pad))


def batch(height, width, n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def assert_within_bound(outputs, expected):
    levels, raw = outputs
    assert levels.dtype == np.uint8 and raw.dtype == np.float32
    assert levels.shape == raw.shape == expected.shape
    wanted = image_io.to_uint8(expected).astype(int)
    assert np.abs(levels.astype(int) - wanted).max() <= verify.MAX_LEVEL_DIFFERENCE
    np.testing.assert_array_equal(levels, image_io.to_uint8(raw))


# ----------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("height, width, n", [(3, 3, 1), (5, 9, 3), (37, 53, 2), (64, 48, 1)])
def test_onnx_matches_jax_forward_at_odd_sizes_and_batches(onnx_file, model, height, width, n):
    run = verify.onnx_runner(onnx_file)
    images = batch(height, width, n)
    assert_within_bound(run(images), reference(model, images))


@pytest.mark.slow
def test_onnx_interface_metadata_and_operators(tmp_path, model_path):
    output = tmp_path / "candy.onnx"
    argv = ["export", f"--model={model_path}", "--format=onnx", f"--output={output}"]
    assert cli.main([*argv, "--verify-sizes=37x53"]) == 0
    model = onnx.load(output)
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    assert graph_input.name == INPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]  # symbolic height and width
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outputs == {
        OUTPUT_NAME: onnx.TensorProto.UINT8,
        FLOAT_OUTPUT_NAME: onnx.TensorProto.FLOAT,
    }
    properties = {p.key: p.value for p in model.metadata_props}
    assert properties["style"] == "candy"
    assert properties["pad"] == str(TEST_PAD)
    assert properties["source_model_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert properties["fnst_jax_version"] == cli.fnst_jax_version() != ""
    assert properties["min_side"] == "3" and properties["dtype"] == "float32"
    assert {node.op_type for node in model.graph.node} <= STANDARD_OPS
    assert {node.domain for node in model.graph.node} == {""}
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert all(a.s == b"reflect" for n in pads for a in n.attribute if a.name == "mode")


def test_smallest_side_is_where_onnxruntime_reflection_starts_to_work(onnx_file, model):
    assert [onnx_graph.smallest_side(pad) for pad in (0, 1, 2, 8, 40)] == [5, 3, 3, 3, 3]
    run = verify.onnx_runner(onnx_file)
    with pytest.raises(Exception, match="Pad"):
        run(batch(2, 9, 1))  # side 2 < smallest_side(8): onnxruntime refuses the pad


def test_float16_onnx_keeps_the_bound(model):
    data = onnx_graph.serialize(model, TEST_PAD, {}, dtype="float16")
    initializers = onnx.load_from_string(data).graph.initializer
    kernels = [t for t in initializers if t.name.endswith(".kernel")]
    assert len(kernels) == 16 and {t.data_type for t in kernels} == {onnx.TensorProto.FLOAT16}
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    images = batch(37, 53, 2)
    levels, raw = session.run([OUTPUT_NAME, FLOAT_OUTPUT_NAME], {INPUT_NAME: images})
    expected = reference(model, images)
    assert_within_bound((levels, raw), expected)
    # It is float16 arithmetic: well above float32's 0.001, below the 0.5 that rounding allows.
    assert 0.01 < np.abs(raw - expected).max() < 0.5


@pytest.mark.slow
def test_opset_range(tmp_path, model):
    for opset in (13, 17):
        data = onnx_graph.serialize(model, TEST_PAD, {}, opset=opset)
        assert onnx.load_from_string(data).opset_import[0].version == opset
    with pytest.raises(ValueError, match="--opset must be between 13 and"):
        onnx_graph.serialize(model, TEST_PAD, {}, opset=12)
    # The tiling functions run at the oldest opset too.
    oldest = tmp_path / "opset13.onnx"
    oldest.write_bytes(onnx_graph.serialize(model, TEST_PAD, {"fnst_jax_version": "t"}, opset=13))
    assert all(check.passed for check in verify.verify_tiling(oldest, model, TEST_PAD))


# ----------------------------------------------------------------------------- tiling functions


def test_tiling_functions_are_carried_not_called(onnx_file):
    """Two model-local functions with standard operators, whose parameters are the graph's
    initializers (stored once), and which the graph itself never calls."""
    model = onnx.load(onnx_file)
    functions = {f.name: f for f in model.functions}
    assert set(functions) == {deploy.TILE_FUNCTION, deploy.MOMENTS_FUNCTION}
    assert {f.domain for f in functions.values()} == {deploy.FUNCTION_DOMAIN}
    assert {node.domain for node in model.graph.node} == {""}
    initializers = {t.name: t for t in model.graph.initializer}
    for function in functions.values():
        assert {node.op_type for node in function.node} <= STANDARD_OPS | FUNCTION_OPS
        assert {node.domain for node in function.node} == {""}
    tile_inputs = list(functions[deploy.TILE_FUNCTION].input)
    given = [name for layer in range(15) for name in deploy.given_names(layer)]
    assert tile_inputs[: 3 + len(given)] == ["tile", "box", "interior", *given]
    weights = tile_inputs[3 + len(given) :]
    assert len(weights) == 16 * 2 + 15 * 2 and set(weights) == set(initializers) - {
        name
        for name in initializers
        if "." not in name  # the graph's own constants
    }
    parameters = sum(onnx.numpy_helper.to_array(initializers[name]).nbytes for name in weights)
    assert parameters == 4 * 1_679_235
    assert onnx_file.stat().st_size < parameters + 200_000  # the functions are ~70 kB


@pytest.mark.slow
def test_tiling_functions_are_the_jax_box_form(onnx_file, model):
    """`tile_forward` and `norm_moments` against the JAX engine's box form, on the same
    tiles, boxes (two distinct ones in one call: the ONNX engine groups tiles by box),
    interiors and statistics. Inside the box the outputs agree to float rounding (0.0007
    measured on outputs spanning 0..255); outside it neither is defined."""
    from fnst_jax.stylize.onnx_engine import OnnxStylizer

    jax_engine, onnx_engine = Stylizer(model, pad=TEST_PAD), OnnxStylizer(onnx_file)
    image = natural_image(50, 70)
    statistics = jax_engine.norm_statistics(image, TEST_PAD)
    measured = onnx_engine.norm_statistics(image, TEST_PAD)
    for (mean, variance), (true_mean, true_variance) in zip(measured, statistics, strict=True):
        np.testing.assert_allclose(mean, true_mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(variance, true_variance, rtol=1e-4, atol=1e-4)

    tiles = batch(96, 80, 3)
    boxes = np.array([[8, 60, 4, 80], [0, 96, 0, 80], [8, 60, 4, 80]], np.int32)
    interiors = np.array([[16, 40, 8, 36], [32, 64, 20, 60], [16, 40, 8, 36]], np.int32)
    got = onnx_engine.tile_outputs(tiles, boxes, statistics)
    expected = jax_engine.tile_outputs(tiles, boxes, statistics)
    for index, (top, bottom, left, right) in enumerate(boxes):
        np.testing.assert_allclose(
            got[index, top:bottom, left:right], expected[index, top:bottom, left:right], atol=0.01
        )
    for layer in (0, 1, 2, 7, 13, 14):  # every resolution, on the way down and up
        got = onnx_engine.tile_summaries(tiles, boxes, interiors, layer, statistics[:layer])
        expected = jax_engine.tile_summaries(tiles, boxes, interiors, layer, statistics[:layer])
        np.testing.assert_array_equal(got[0], expected[0])  # counts
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-4, atol=1e-3)  # means
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-4)  # squared deviations


def test_a_file_without_tiling_functions_says_to_export_again(tmp_path, onnx_file):
    """A file exported before tiling existed (no functions) stylizes images whole and
    refuses tiles with a message that names the fix."""
    from fnst_jax.stylize.onnx_engine import OnnxStylizer

    old = onnx.load(onnx_file)
    del old.functions[:]
    path = tmp_path / "old.onnx"
    onnx.save(old, path)
    stylizer = OnnxStylizer(path, max_pixels=32 * 32, tile=32)
    assert stylizer.stylize(natural_image(30, 30)).shape == (30, 30, 3)
    with pytest.raises(UserError, match="no tiling functions .* export it again"):
        stylizer.stylize(natural_image(40, 40))


# ----------------------------------------------------------------------------- StableHLO

# Runs in a fresh interpreter that has only jax and numpy: no fnst_jax import at all.
STANDALONE = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
    images = np.load(sys.argv[2])
    results = {}
    for name, array in images.items():
        outputs = exported.call(array)
        results[name + "/levels"] = np.asarray(outputs["stylized"])
        results[name + "/raw"] = np.asarray(outputs["stylized_float"])
    np.savez(sys.argv[3], **results)
    assert not any(m.split(".")[0] == "fnst_jax" for m in sys.modules), "fnst_jax imported"
    print(",".join(exported.platforms))
    """
)


@pytest.mark.slow
def test_stablehlo_is_callable_without_fnst_jax(tmp_path, model):
    program = tmp_path / "candy.jaxexport"
    program.write_bytes(stablehlo.serialize(model, TEST_PAD))
    images = {"one": batch(1, 1, 1), "odd": batch(5, 7, 3), "wide": batch(37, 53, 2)}
    np.savez(tmp_path / "in.npz", **images)
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE, program, tmp_path / "in.npz", tmp_path / "out.npz"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository: `fnst_jax` must not be importable by accident
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cpu,cuda,tpu"
    with np.load(tmp_path / "out.npz") as results:
        for name, images_of_size in images.items():
            outputs = (results[f"{name}/levels"], results[f"{name}/raw"])
            assert_within_bound(outputs, reference(model, images_of_size))


# ----------------------------------------------------------------------------- the check


def test_compare_bounds_levels_not_floats():
    images = batch(4, 4, 1)
    expected = np.full(images.shape, 100.4, np.float32)
    close = expected + 0.3  # 100.7 rounds to 101: one level, passes
    check = verify.compare(images, (image_io.to_uint8(close), close), expected)
    assert check.passed and check.max_level_difference == 1
    far = expected + 1.5
    check = verify.compare(images, (image_io.to_uint8(far), far), expected)
    assert not check.passed and check.max_level_difference == 2
    with pytest.raises(verify.VerificationError, match="disagrees with the JAX model .* 4x4"):
        verify.require_agreement([check], "x.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_a_file_that_disagrees_is_never_left(tmp_path, model_path, monkeypatch, capsys, fmt):
    """A file built from another model fails its check: the command exits 2 and leaves
    neither the file nor its temporary, and an existing output stays as it was."""
    other = TransformerNet(rngs=nnx.Rngs(7))
    if fmt == "onnx":
        build = onnx_graph.serialize
        monkeypatch.setattr(onnx_graph, "serialize", lambda m, *a, **k: build(other, *a, **k))
    else:
        build = stablehlo.serialize
        monkeypatch.setattr(stablehlo, "serialize", lambda m, *a: build(other, *a))
    output = tmp_path / "out" / f"candy.{fmt}"
    output.parent.mkdir()
    output.write_bytes(b"previous")
    argv = ["export", f"--model={model_path}", f"--format={fmt}", f"--output={output}"]
    assert cli.main([*argv, "--overwrite", "--verify-sizes=37x53"]) == 2
    err = capsys.readouterr().err
    assert f"error: {output}: not written: the exported file disagrees with the JAX model" in err
    assert "37x53" in err and "Traceback" not in err
    assert output.read_bytes() == b"previous"
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]


# ----------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_command_writes_verified_stablehlo(tmp_path, model_path, capsys):
    output = tmp_path / "candy.jaxexport"
    argv = ["export", f"--model={model_path}", "--format=stablehlo", f"--output={output}"]
    assert cli.main([*argv, "--verify-sizes=64x64,37x53"]) == 0
    err = capsys.readouterr().err
    assert f"wrote {output}" in err and "64x64 (batch 2)" in err and "37x53 (batch 2)" in err
    assert output.stat().st_size > 1_000_000  # the parameters are in it


def old_layout(path):
    """A model file whose parameters predate the current TransformerNet (one missing)."""
    arrays, meta = model_file.read_model(save_test_model(path))
    del arrays["out/conv/bias"]
    arrays[model_file.META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"garbage"), "not an fnst_jax model file"),
        (lambda p: np.savez(p, weights=np.zeros(3)), "no __fnst_meta__"),
        (
            lambda p: np.savez(
                p,
                __fnst_meta__=np.frombuffer(
                    b'{"format": "fnst_jax.model", "version": 99}', np.uint8
                ),
            ),
            "newer than this fnst_jax supports",
        ),
        (old_layout, "parameters do not match TransformerNet"),
        (None, "model file not found"),
    ],
)
def test_unusable_model_files_exit_2_with_a_clear_error(tmp_path, capsys, make, message):
    model_path = tmp_path / "model.npz"
    if make is not None:
        make(model_path)
    output = tmp_path / "out.onnx"
    assert cli.main(["export", f"--model={model_path}", "--format=onnx", f"--output={output}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not output.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format=stablehlo", "--dtype=float16"], "--dtype float16 is for --format onnx"),
        (["--format=onnx", "--opset=12"], "--opset must be between 13"),
        (["--format=onnx", "--verify-sizes=64"], "is not WIDTHxHEIGHT"),
        (["--format=onnx", "--verify-sizes=4x4"], "too small to check"),
        (["--format=tflite"], "value should be one of"),
        (["--format=onnx", "--style-input"], "--style-input: the model has one style"),
        ([], "--format is required"),
    ],
)
def test_usage_errors_exit_2(tmp_path, model_path, capsys, extra, message):
    argv = ["export", f"--model={model_path}", f"--output={tmp_path / 'x'}", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(tmp_path, model_path, capsys):
    output = tmp_path / "candy.onnx"
    output.write_bytes(b"keep")
    assert cli.main(["x", f"--model={model_path}", "--format=onnx", f"--output={output}"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_bytes() == b"keep"


@pytest.mark.slow
def test_real_entry_points(tmp_path, model_path):
    """`python -m fnst_jax.deploy` and `python -m fnst_jax.export` (the same command) in a
    real process: --help, and an error exit."""
    env = dict(os.environ, FNST_JAX_CACHE=str(tmp_path / "cache"))
    for module in ("fnst_jax.deploy", "fnst_jax.export"):
        help_run = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env
        )
        assert help_run.returncode == 0, help_run.stderr
        for flag in ("--model", "--format", "--output", "--opset", "--dtype", "--verify-sizes"):
            assert flag in help_run.stdout
        argv = [f"--model={tmp_path / 'nope'}", "--format=onnx", f"--output={tmp_path / 'x'}"]
        bad = subprocess.run(
            [sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env
        )
        assert bad.returncode == 2 and "model file not found" in bad.stderr


# ----------------------------------------------------------------------------- trained model

PHOTO_STEPS = 24


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory) -> Path:
    """A model trained here on the real photos with the real VGG19 conv1_1..conv3_4 weights:
    the quick start's recipe (configs/photos_mosaic.py: mosaic, style relu1_1/relu2_1/
    relu3_1, content relu2_2), shrunk to 64 px crops (so a 10 px pad, by default.py's rule),
    batch 2 and 24 steps (about a minute of CPU on an idle 2-core machine). Skipped without
    ../shared/data."""
    style = SHARED_DATA / "styles" / "mosaic.jpg"
    if not (PHOTOS_DIR.is_dir() and REAL_VGG_NPZ.is_file() and style.is_file()):
        pytest.skip(f"{SHARED_DATA} (photos, VGG19 weights, mosaic.jpg) not present")
    workdir = tmp_path_factory.mktemp("photo_model")
    overrides = {
        "style_image": style,
        "style_size": 128,
        "data.source": f"folder:{PHOTOS_DIR}",
        "vgg.weights": REAL_VGG_NPZ,
        "train.image_size": 64,
        "train.batch_size": 2,
        "train.steps": PHOTO_STEPS,
        "checkpoint_every": PHOTO_STEPS,
        "sample_every": 1000,
        "eval_every": 1000,
        "num_validation_images": 2,
        "validation_size": 0,  # no validation at 512 px: the export is what is tested
    }
    command = [
        sys.executable,
        str(REPO / "train.py"),
        f"--config={REPO / 'configs' / 'photos_mosaic.py'}",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", FNST_JAX_CACHE=str(workdir / "cache"))
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    _, metadata = model_file.read_model(workdir)
    assert metadata["step"] == PHOTO_STEPS and metadata["pad"] == 10
    return workdir


@pytest.mark.slow
def test_trained_model_exports_verify(tmp_path, photo_model, capsys):
    """Both formats (and float16 ONNX) of a model trained on the real photos pass the
    exporter's check at its default sizes, the ONNX files tiled too."""
    for fmt, extra in (("onnx", []), ("onnx", ["--dtype=float16"]), ("stablehlo", [])):
        output = tmp_path / f"trained_{fmt}_{len(extra)}"
        argv = ["export", f"--model={photo_model}", f"--format={fmt}", f"--output={output}"]
        assert cli.main([*argv, *extra]) == 0, capsys.readouterr().err
        err = capsys.readouterr().err
        assert output.is_file() and "256x171 (batch 2)" in err
        assert ("tiled, exact statistics" in err) == (fmt == "onnx")


@pytest.mark.slow
def test_one_style_of_a_multi_style_model_exports(tmp_path, capsys):
    """An exported file computes one style (or mix) of a multi-style model: --style picks
    it, the file is verified against the model in that style and named after it."""
    model_path = save_multi_style_test_model(tmp_path / "duo.npz")
    output = tmp_path / "waves.onnx"
    argv = ["export", f"--model={model_path}", "--format=onnx", f"--output={output}"]
    assert cli.main([*argv, "--verify-sizes=37x53"]) == 2
    assert "the model has 2 styles" in capsys.readouterr().err and not output.exists()
    assert cli.main([*argv, "--verify-sizes=37x53", "--style=waves"]) == 0
    assert "style waves" in capsys.readouterr().err
    stylizer = Stylizer.from_model_file(model_path, style=1)
    image = natural_image(29, 41, seed=2)
    onnx_stylizer = loading.load_stylizer(output)
    assert onnx_stylizer.style_names == ["waves"]
    difference = np.abs(
        onnx_stylizer.stylize(image).astype(int) - stylizer.stylize(image).astype(int)
    )
    assert difference.max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_style_input_file_computes_every_style_and_mix(tmp_path, capsys, fmt):
    """--style-input: one file for every style of a multi-style model. Each image of a batch
    gets its own style or mix (weights given unnormalised), as the JAX model computes it;
    the checks the exporter ran cover each style and a mix."""
    names = ("dots", "waves", "lines")
    model_path = save_multi_style_test_model(tmp_path / "trio.npz", names=names)
    output = tmp_path / f"trio.{fmt}"
    argv = ["export", f"--model={model_path}", f"--format={fmt}", f"--output={output}"]
    assert cli.main([*argv, "--style-input", "--style=dots"]) == 2
    assert "without --style" in capsys.readouterr().err and not output.exists()
    assert cli.main([*argv, "--style-input", "--verify-sizes=37x53,40x24"]) == 0
    err = capsys.readouterr().err
    assert "styles dots,waves,lines by the 'style' input" in err
    assert "styles 0, 1" in err and "styles 2, 0" in err and "an even mix" in err
    model, _ = export.load_model(model_path)
    images = batch(29, 41, n=3, seed=3)
    weights = np.array([[0, 0, 1], [2, 1, 1], [0, 1, 0]], np.float32)
    normalised = weights / weights.sum(axis=1, keepdims=True)
    expected = np.asarray(stylize_padded(model, images, TEST_PAD, normalised))
    runner = verify.onnx_runner(output) if fmt == "onnx" else verify.stablehlo_runner(output)
    assert_within_bound(runner(images, weights), expected)
    # The styles differ: the same image in two styles is not the same output.
    assert np.abs(expected[0] - expected[2]).max() > 10
    if fmt == "onnx":
        onnx_model = onnx.load(output)
        properties = {p.key: p.value for p in onnx_model.metadata_props}
        assert properties["styles"] == ",".join(names) and properties["style_input"] == "style"
        assert [i.name for i in onnx_model.graph.input] == [INPUT_NAME, deploy.STYLE_INPUT_NAME]
        assert not onnx_model.functions  # no tiling functions: tiling is refused, in words
        # stylize.py runs the file in each style and in a mix, as it runs the .npz model.
        photo = save(tmp_path / "photo.png", natural_image(29, 41, seed=5))
        for extra, suffixes in (
            (["--style=all"], names),
            (["--style-mix=dots:1,lines:1"], ["dots50-lines50"]),
        ):
            for source in (model_path, output):
                assert run_stylize(source, tmp_path / source.suffix, photo, extra=extra) == 0
            for suffix in suffixes:
                expected = np.asarray(Image.open(tmp_path / ".npz" / f"photo_trio_{suffix}.png"))
                got = np.asarray(Image.open(tmp_path / ".onnx" / f"photo_trio_{suffix}.png"))
                assert np.abs(got.astype(int) - expected).max() <= 1, suffix
        stylizer = loading.load_stylizer(output, max_pixels=100)
        assert stylizer.style_names == list(names)
        with pytest.raises(UserError, match="cannot tile images above --max-pixels"):
            stylizer.with_style(1).stylize(natural_image(20, 24))
