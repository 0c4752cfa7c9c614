"""What a training run saves and resumes from: the typed train state in and out of orbax
checkpoints (those written in the dict layout included), model.npz and best.npz."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import smoke
from fnst_jax import checkpoint, export, model_file, train_checkpoint, train_step
from fnst_jax.loss_weights import loss_spec_from_config, weights_of
from fnst_jax.transformer_net import TransformerNet


def small_state() -> train_step.TrainState:
    params = {"w": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    return train_step.new_state(params, optax.adam(0.1))


@pytest.mark.parametrize("extra", [{}, {"rng": jax.random.PRNGKey(0)}], ids=["dict", "with-rng"])
def test_a_checkpoint_in_the_dict_layout_resumes_as_a_train_state(tmp_path, extra):
    """Checkpoints hold a plain dict of the state's fields (older ones an unused `rng`
    besides): restored as the typed state, with the data position and the loss weights."""
    state = small_state()
    saved = dict(state.to_dict(), step=jnp.int32(7), **extra)
    manager = checkpoint.make_manager(tmp_path, keep=1)
    try:
        assert train_checkpoint.restore_latest(manager, like=state) is None
        checkpoint.save(manager, 7, saved, {"position": 7}, {"loss_weights": {"tv_weight": 2.0}})
        manager.wait_until_finished()
        restored = train_checkpoint.restore_latest(manager, like=state)
    finally:
        manager.close()
    assert (restored.step, restored.data_state) == (7, {"position": 7})
    assert restored.loss_weights == {"tv_weight": 2.0}
    assert isinstance(restored.state, train_step.TrainState)
    assert int(restored.state.step) == 7
    jax.tree.map(np.testing.assert_array_equal, restored.state.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, restored.state.opt_state, state.opt_state)


def test_checkpointer_saves_the_model_and_keeps_the_best(tmp_path):
    config = smoke.get_config()
    config.style_image = "dots.png"
    # The network's structure without running its initialisers (seconds of compilation).
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: TransformerNet(rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda a: rng.normal(size=a.shape).astype(a.dtype), nnx.to_pure_dict(abstract)
    )
    state = train_step.new_state(params, optax.sgd(0.1))
    spec = loss_spec_from_config(config.loss).with_weights(style_weight=7.0)
    step_config = train_step.StepConfig(graphdef, spec, pad=4, dtype=jnp.float32)
    manager = checkpoint.make_manager(tmp_path, keep=2)
    try:
        saver = train_checkpoint.Checkpointer(
            manager,
            tmp_path,
            config=config,
            step_config=step_config,
            vgg_preprocessing="torch",
            styles=[{"name": "dots", "image": "/dots.png", "thumbnail": None}],
            resumed=False,
        )
        saver.keep_if_best(3, state, {"total": 2.0})
        saver.save(3, state, {"position": 3}, validation={"total": 2.0})
        worse = state.replace(params=jax.tree.map(lambda p: p + 1.0, state.params))
        saver.keep_if_best(6, worse, {"total": 2.5})  # not better: best.npz stays step 3's
        manager.wait_until_finished()
        restored = train_checkpoint.restore_latest(manager, like=state)
    finally:
        manager.close()
    assert restored.loss_weights == weights_of(spec)
    params_written, meta = model_file.read_model(tmp_path)
    assert meta["step"] == 3 and meta["validation"] == {"total": 2.0}
    assert meta["loss"]["style_weight"] == 7.0
    np.testing.assert_equal(params_written, export.flatten_params(params))
    best, best_meta = model_file.read_model(tmp_path / model_file.BEST_FILENAME)
    assert best_meta["step"] == 3 and best_meta["selected_by"] == checkpoint.BEST_SELECTION
    np.testing.assert_equal(best, params_written)
