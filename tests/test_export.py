"""The model file: round trip, metadata, refusals with clear messages, atomic writes, and the
checkpoint fallback of a workdir that has not exported yet."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import smoke
from fnst_jax import checkpoint, export, model_file, train_step
from fnst_jax.errors import UserError
from fnst_jax.train_lib import loss_spec_from_config
from fnst_jax.transformer_net import TransformerNet


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    return TransformerNet(rngs=nnx.Rngs(7))


def test_round_trip_keeps_every_parameter_and_the_metadata(tmp_path, model):
    path = export.save_model(tmp_path / "m.npz", model, {"pad": 8, "style_image": "s.jpg"})
    loaded, meta = export.load_model(path)
    np.testing.assert_equal(export.flat_params(loaded), export.flat_params(model))
    assert meta == {
        "format": model_file.FORMAT,
        "version": model_file.VERSION,
        "pad": 8,
        "style_image": "s.jpg",
    }
    # A folder stands for its model.npz.
    export.save_model(tmp_path / "run" / model_file.MODEL_FILENAME, model, {})
    assert model_file.resolve_model_path(tmp_path / "run") == tmp_path / "run" / "model.npz"
    assert list(tmp_path.glob(".*")) == []  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("num_styles", [1, 3])
def test_model_from_arrays_holds_the_stored_arrays_and_runs_no_initialiser(
    num_styles, compiled_programs
):
    """The parameters are the stored arrays bit for bit, and the network is built abstractly:
    not one XLA program runs, where building it with its random initialisers compiles dozens
    (seconds of a cold start on CPU; counted here, so the check itself is shown to work)."""
    rng = np.random.default_rng(num_styles)
    built = []
    initialisers = compiled_programs(
        lambda: built.append(TransformerNet(num_styles=num_styles, rngs=nnx.Rngs(3)))
    )
    assert len(initialisers) > 10
    # Values no initialiser would give, so a parameter left initialised cannot pass.
    arrays = {
        name: rng.standard_normal(value.shape).astype(np.float32)
        for name, value in export.flat_params(built[0]).items()
    }
    loaded = []
    assert compiled_programs(lambda: loaded.append(export.model_from_arrays(arrays, "x"))) == []
    params = export.flat_params(loaded[0])
    assert params.keys() == arrays.keys()
    for name, value in params.items():
        assert value.dtype == np.float32 and value.tobytes() == arrays[name].tobytes(), name
    assert loaded[0].num_styles == num_styles


def test_bfloat16_load_keeps_float32_parameters(tmp_path, model):
    path = export.save_model(tmp_path / "m.npz", model, {})
    loaded, _ = export.load_model(path, dtype=jnp.bfloat16)
    assert {v.dtype for v in export.flat_params(loaded).values()} == {np.dtype(np.float32)}


def _with_meta(path, meta: dict, arrays: dict) -> None:
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays, **{model_file.META_KEY: blob})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, m: None, "model file not found"),
        (lambda p, m: p.write_bytes(b"garbage"), "not an fnst_jax model file"),
        (lambda p, m: np.savez(p, weights=np.zeros(3)), "no __fnst_meta__"),
        (lambda p, m: _with_meta(p, {"format": "other"}, {}), "format 'other'"),
        (
            lambda p, m: _with_meta(p, {"format": model_file.FORMAT, "version": 99}, {}),
            "newer than this fnst_jax",
        ),
        (
            lambda p, m: _with_meta(
                p, {"format": model_file.FORMAT, "version": 1}, dict(export.flat_params(m), extra=1)
            ),
            "unexpected \\['extra'\\]",
        ),
    ],
)
def test_bad_model_files_are_user_errors_naming_the_file(tmp_path, model, make, message):
    path = tmp_path / "model.npz"
    make(path, model)
    with pytest.raises(model_file.ModelFileError, match=message) as error:
        export.load_model(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, UserError) and isinstance(error.value, ValueError)


def test_wrong_parameter_shape_is_refused(tmp_path, model):
    arrays = export.flat_params(model)
    name = sorted(arrays)[0]
    arrays[name] = np.zeros((1, 2))
    _with_meta(tmp_path / "m.npz", {"format": model_file.FORMAT, "version": 1}, arrays)
    with pytest.raises(model_file.ModelFileError, match=f"parameter {name} has shape"):
        export.load_model(tmp_path / "m.npz")


def test_failed_write_leaves_the_previous_file(tmp_path, model, monkeypatch):
    path = export.save_model(tmp_path / "m.npz", model, {"step": 1})

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="disk full"):
        export.save_model(path, model, {"step": 2})
    assert model_file.read_model(path)[1]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


@pytest.mark.slow
def test_export_model_from_training_params_with_its_metadata(tmp_path):
    config = smoke.get_config()
    config.style_image = "style.png"
    graphdef, params = train_step.init_model(jax.random.PRNGKey(0), jnp.float32)
    spec = loss_spec_from_config(config.loss)
    meta = export.model_metadata(config, spec, "torch", step=12)
    json.dumps(meta)  # JSON-serialisable (no config or numpy objects left)
    export.export_model(tmp_path, graphdef, params, meta)

    model, loaded = export.load_model(tmp_path)
    assert loaded["step"] == 12 and loaded["pad"] == config.train.pad
    assert loaded["style_image"] == str(Path.cwd() / "style.png")
    assert tuple(loaded["loss"]["style_layers"]) == config.loss.style_layers
    assert loaded["vgg"] == {"weights": "random", "preprocessing": "torch"}
    assert loaded["config"]["train"]["steps"] == config.train.steps
    expected = export.flatten_params(params)
    np.testing.assert_equal(export.flat_params(model), expected)


def test_style_thumbnail_is_a_small_jpeg_of_the_style_image(tmp_path, model):
    """Longest side at most 128 px, aspect kept, never enlarged; a model file carries it in
    its metadata, and one without it (exported before it existed) still loads."""
    y, x = np.mgrid[0:200, 0:300]
    style = np.stack([x * 255 // 299, y * 255 // 199, (x + y) * 255 // 498], -1).astype(np.uint8)
    thumbnail = model_file.make_style_thumbnail(style)
    with Image.open(io.BytesIO(base64.b64decode(thumbnail, validate=True))) as image:
        assert image.format == "JPEG" and image.size == (128, 85)
        # The same picture: a gradient, compared with an independent resize.
        expected = np.asarray(Image.fromarray(style).resize((128, 85), Image.Resampling.BOX))
        assert np.abs(np.asarray(image, float) - expected).mean() < 3
    with Image.open(
        io.BytesIO(base64.b64decode(model_file.make_style_thumbnail(style[:40, :60])))
    ) as small:
        assert small.size == (60, 40)

    config = smoke.get_config()
    config.style_image = "style.png"
    styles = [{"name": "style", "image": "style.png", "thumbnail": thumbnail}]
    meta = export.model_metadata(config, loss_spec_from_config(config.loss), "torch", 3, styles)
    path = export.save_model(tmp_path / "m.npz", model, meta)
    _, loaded = export.load_model(path)
    assert loaded[model_file.STYLE_THUMBNAIL_KEY] == thumbnail
    assert model_file.style_thumbnail_jpeg(loaded) == base64.b64decode(thumbnail)
    assert model_file.style_names(loaded) == ["style"]

    old = export.save_model(tmp_path / "old.npz", model, {"pad": 8})
    _, loaded = export.load_model(old)
    assert model_file.STYLE_THUMBNAIL_KEY not in loaded
    assert model_file.style_thumbnail_jpeg(loaded) is None
    assert model_file.style_names(loaded) == ["style"]  # no style_image either
    assert model_file.style_names({"style_image": "/a/candy.jpg"}) == ["candy"]
    assert model_file.style_thumbnail_jpeg({"style_thumbnail": "not base64!"}) is None


def test_workdir_without_model_falls_back_to_its_latest_checkpoint(tmp_path):
    """A run stopped before its first export still stylizes (from checkpoints/N)."""
    tx = train_step.make_optimizer("adam", 1e-3)
    _, state = train_step.init_state(jax.random.PRNGKey(1), jnp.float32, tx)
    manager = checkpoint.make_manager(tmp_path, keep=1)
    checkpoint.save(manager, 3, state.to_dict(), {}, {"model_metadata": {"pad": 4, "step": 3}})
    manager.wait_until_finished()
    manager.close()

    model, meta = export.load_model(tmp_path)
    assert meta == {"pad": 4, "step": 3}
    np.testing.assert_equal(export.flat_params(model), export.flatten_params(state.params))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(model_file.ModelFileError, match="neither an exported model"):
        export.load_model(empty)


def test_best_model_is_exported_beside_model_npz_with_its_validation(tmp_path):
    """export_model(..., BEST_FILENAME) writes WORKDIR/best.npz and leaves model.npz alone;
    the validation figures land in the metadata as floats; a workdir still means model.npz."""
    config = smoke.get_config()
    config.style_image = "style.png"
    spec = loss_spec_from_config(config.loss)
    graphdef, params = train_step.init_model(jax.random.PRNGKey(0), jnp.float32)
    _, other = train_step.init_model(jax.random.PRNGKey(1), jnp.float32)
    export.export_model(tmp_path, graphdef, params, export.model_metadata(config, spec, "torch", 9))
    validation = {"total": np.float32(2.5), "style_reduction": 3.0}
    meta = export.model_metadata(config, spec, "torch", 4, validation=validation)
    json.dumps(meta)  # the numpy scalar became a float
    export.export_model(tmp_path, graphdef, other, meta, model_file.BEST_FILENAME)

    best, best_meta = export.load_model(tmp_path / "best.npz")
    assert best_meta["step"] == 4 and best_meta["validation"] == {
        "total": 2.5,
        "style_reduction": 3.0,
    }
    np.testing.assert_equal(export.flat_params(best), export.flatten_params(other))
    last, last_meta = export.load_model(tmp_path)  # the workdir: model.npz, as before
    assert last_meta["step"] == 9 and "validation" not in last_meta
    np.testing.assert_equal(export.flat_params(last), export.flatten_params(params))


def test_read_metadata_reads_and_checks_only_the_metadata(tmp_path, model):
    path = export.save_model(tmp_path / "m.npz", model, {"step": 5})
    assert model_file.read_metadata(path) == model_file.read_model(path)[1]
    assert model_file.read_metadata(tmp_path / "m.npz")["step"] == 5
    np.savez(tmp_path / "plain.npz", weights=np.zeros(3))
    _with_meta(tmp_path / "other.npz", {"format": "other"}, {})
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    for name, message in (
        ("plain.npz", "no __fnst_meta__ entry"),
        ("other.npz", "format 'other'"),
        ("garbage.npz", "not an fnst_jax model file"),
        ("missing.npz", "model file not found"),
    ):
        with pytest.raises(model_file.ModelFileError, match=message) as error:
            model_file.read_metadata(tmp_path / name)
        assert str(error.value).count(str(tmp_path / name)) == 1  # named once, not nested
