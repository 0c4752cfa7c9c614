"""The train step on tiny shapes: the state, the update and its non-finite skip, the jitted step
against the validation forward (slow lane: seconds of compilation each). The loop around it is
tested end to end in test_train.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fnst_jax import train_step
from fnst_jax.errors import UserError
from fnst_jax.losses import LossSpec, style_grams

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2", style_weight=1e3)


def test_nonfinite_step_is_skipped():
    """A non-finite step leaves the parameters and the optimizer state unchanged."""
    params = {"w": jnp.ones(3)}
    tx = optax.adam(0.1)
    state = train_step.new_state(params, tx)
    # One good step first, so Adam's moments are not zeros that a wrong update could keep.
    state, _ = train_step.apply_gradients(
        state, {"total": jnp.float32(1.0)}, {"w": jnp.ones(3)}, tx
    )
    bad, _ = train_step.apply_gradients(
        state, {"total": jnp.float32(np.nan)}, {"w": jnp.full(3, np.nan)}, tx
    )
    jax.tree.map(np.testing.assert_array_equal, bad.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, bad.opt_state, state.opt_state)
    assert int(bad.nonfinite_run) == 1 and int(bad.step) == 2
    good, _ = train_step.apply_gradients(bad, {"total": jnp.float32(1.0)}, {"w": jnp.ones(3)}, tx)
    assert int(good.nonfinite_run) == 0 and int(good.nonfinite_total) == 1
    assert not np.allclose(good.params["w"], state.params["w"])


def test_finite_loss_with_infinite_gradient_is_skipped():
    """Parameters and optimizer state unchanged; Adam would otherwise put the inf into its
    moments and its step count."""
    tx = optax.adam(0.1)
    state = train_step.new_state({"w": jnp.ones(2)}, tx)
    bad, metrics = train_step.apply_gradients(
        state, {"total": jnp.float32(1.0)}, {"w": jnp.array([1.0, np.inf])}, tx
    )
    jax.tree.map(np.testing.assert_array_equal, bad.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, bad.opt_state, state.opt_state)
    assert int(bad.nonfinite_total) == 1 and not np.isfinite(float(metrics["grad_norm"]))


def test_init_state_is_seeded_whatever_the_dtype():
    tx = optax.adam(1e-3)
    graphdef, state = train_step.init_state(jax.random.PRNGKey(3), jnp.float32, tx)
    assert int(state.step) == 0
    _, bf16_params = train_step.init_model(jax.random.PRNGKey(3), jnp.bfloat16)
    jax.tree.map(np.testing.assert_array_equal, state.params, bf16_params)
    _, other = train_step.init_model(jax.random.PRNGKey(4), jnp.float32)
    assert not np.array_equal(
        state.params["conv1"]["conv"]["conv"]["kernel"],
        other["conv1"]["conv"]["conv"]["kernel"],
    )


def test_state_dict_is_the_checkpoint_layout():
    """Checkpoints hold `to_dict`: one entry per field, which `from_dict` takes back."""
    state = train_step.new_state({"w": jnp.ones(2)}, optax.adam(0.1))
    layout = state.to_dict()
    assert list(layout) == ["params", "opt_state", "step", "nonfinite_run", "nonfinite_total"]
    again = train_step.TrainState.from_dict(layout)
    assert jax.tree.structure(again) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, again, state)


@pytest.mark.usefixtures("fast_compile")
def test_output_bias_sets_only_the_last_bias():
    """train.output_bias: the untrained network starts at that pixel value, not near black;
    every other parameter is the default init of the same seed."""
    rng = jax.random.PRNGKey(3)
    graphdef, params = train_step.init_model(rng, jnp.float32, output_bias=127.5)
    _, default = train_step.init_model(rng, jnp.float32)
    np.testing.assert_array_equal(params["out"]["conv"]["bias"], np.full(3, 127.5, np.float32))
    params["out"]["conv"]["bias"] = default["out"]["conv"]["bias"]
    jax.tree.map(np.testing.assert_array_equal, params, default)
    params["out"]["conv"]["bias"] = jnp.full(3, 127.5)
    photo = jnp.full((1, 32, 32, 3), 90.0)
    output = nnx.merge(graphdef, params)(photo)
    assert abs(float(output.mean()) - 127.5) < 5.0


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(UserError, match="train.optimizer"):
        train_step.make_optimizer("adagrad", 1e-3)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compile", "highest_precision")
def test_jit_step_descends_the_gradient_of_the_validation_objective(vgg4):
    """One jitted SGD step on a 1-device mesh. Its loss terms are the validation forward's
    at the same parameters (one objective). Its update is -lr * gradient, checked against
    finite differences of the validation forward (no autodiff): the validation loss's slope
    along that gradient g, (L(p + e*g) - L(p - e*g)) / 2e, must be |g|^2. A non-finite
    batch leaves the parameters unchanged."""
    lr = 1e-3
    tx = train_step.make_optimizer("sgd", lr)
    graphdef, state = train_step.init_state(jax.random.PRNGKey(0), jnp.float32, tx)
    config = train_step.StepConfig(graphdef, SPEC, pad=2, dtype=jnp.float32)
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)), jnp.float32)
    grams = style_grams(vgg4, images[:1], SPEC.style_layers)
    initial = jax.tree.map(np.asarray, state.params)
    evaluate = train_step.make_eval_fn(config)
    terms, _ = evaluate(state.params, images, vgg4, grams)

    step = train_step.make_jit_step(train_step.make_mesh(), tx, config)
    new, metrics = step(state, images, vgg4, grams)
    assert int(new.step) == 1 and int(new.nonfinite_total) == 0
    for key, value in terms.items():
        # Same computation, compiled twice (with and without the backward pass): float32
        # rounding only.
        np.testing.assert_allclose(float(metrics[key]), float(value), rtol=1e-5, err_msg=key)
    trained = jax.tree.map(np.array, new.params)
    gradient = jax.tree.map(lambda a, b: (a - b) / lr, initial, trained)
    squared_norm = sum(
        float(np.sum(np.square(g, dtype=np.float64))) for g in jax.tree.leaves(gradient)
    )
    assert squared_norm > 0
    np.testing.assert_allclose(float(metrics["grad_norm"]) ** 2, squared_norm, rtol=1e-4)

    def loss_at(distance: float) -> float:
        params = jax.tree.map(lambda p, g: p + distance * g, initial, gradient)
        return float(evaluate(params, images, vgg4, grams)[0]["total"])

    # A step of length 1e-3 in parameter space: measured 3e-4 relative error against 6e-3 at
    # 1e-2 (curvature) and 1.4e-2 at 1e-5 (float32 rounding of the loss).
    distance = 1e-3 / squared_norm**0.5
    slope = (loss_at(distance) - loss_at(-distance)) / (2 * distance)
    np.testing.assert_allclose(slope, squared_norm, rtol=1e-2)

    # The compiled step skips a non-finite batch.
    skipped, _ = step(new, images.at[0, 0, 0, 0].set(np.nan), vgg4, grams)
    assert int(skipped.nonfinite_run) == 1 and int(skipped.step) == 2
    jax.tree.map(np.testing.assert_array_equal, skipped.params, trained)


def test_step_style_visits_every_style_once_per_block():
    styles = [int(train_step.step_style(0, jnp.int32(step), 3)) for step in range(12)]
    for block in range(4):
        assert sorted(styles[3 * block : 3 * block + 3]) == [0, 1, 2]
    assert styles != [0, 1, 2] * 4  # the order is drawn per block
    assert styles == [int(train_step.step_style(0, jnp.int32(s), 3)) for s in range(12)]
    assert int(train_step.step_style(0, jnp.int32(5), 1)) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_multi_style_step_is_the_one_style_step_of_its_style(vgg4, dtype):
    """Scoring a 2-style model on style 1 is scoring a one-style model made of its style-1 norm
    rows against style 1's Grams with style 1's weight; a jitted step trains the style that
    `step_style` names and leaves the other style's norm rows untouched."""
    tx = train_step.make_optimizer("adam", 1e-2)
    graphdef, state = train_step.init_state(jax.random.PRNGKey(0), dtype, tx, num_styles=2)
    rng = np.random.default_rng(1)
    params = jax.tree.map(  # distinct norm rows, as after training
        lambda p: p + jnp.asarray(rng.normal(0, 0.2, p.shape), jnp.float32) if p.ndim == 2 else p,
        state.params,
    )
    state = state.replace(params=params)
    images = jnp.asarray(rng.uniform(0, 255, (2, 16, 16, 3)), jnp.float32)
    style_images = jnp.asarray(rng.uniform(0, 255, (2, 20, 20, 3)), jnp.float32)
    grams = style_grams(vgg4, style_images, SPEC.style_layers)  # (2, C, C): one row per style
    spec = SPEC.with_weights(style_weights=(1e3, 4e3))
    config = train_step.StepConfig(graphdef, spec, pad=2, dtype=dtype, num_styles=2)
    terms, stylized = train_step.make_eval_fn(config)(params, images, vgg4, grams, 1)

    one_graphdef, _ = train_step.init_model(jax.random.PRNGKey(0), dtype)
    row = jax.tree.map(lambda p: p[1] if p.ndim == 2 else p, params)
    one_config = train_step.StepConfig(
        one_graphdef, SPEC.with_weights(style_weight=4e3), pad=2, dtype=dtype
    )
    one_grams = {layer: gram[1:] for layer, gram in grams.items()}
    expected, expected_stylized = train_step.make_eval_fn(one_config)(row, images, vgg4, one_grams)
    np.testing.assert_allclose(np.asarray(stylized), np.asarray(expected_stylized), atol=0.05)
    for key, value in expected.items():
        np.testing.assert_allclose(float(terms[key]), float(value), rtol=2e-3, err_msg=key)

    step = train_step.make_jit_step(train_step.make_mesh(), tx, config)
    trained = int(train_step.step_style(0, jnp.int32(0), 2))
    before = np.array(params["conv1"]["norm"]["scale"])  # the step donates the state
    new, metrics = step(state, images, vgg4, grams)
    assert np.isfinite(float(metrics["total"]))
    scale = np.asarray(new.params["conv1"]["norm"]["scale"])
    assert np.abs(scale[trained] - before[trained]).max() > 1e-3
    np.testing.assert_array_equal(scale[1 - trained], before[1 - trained])
