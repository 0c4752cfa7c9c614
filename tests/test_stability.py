"""The stability term (fnst_jax.stability) and its place in the train step: the warp, the
perturbation's draws, weight 0 = the perceptual loss exactly, the step with the term on (f32
and bf16), and auto-balance. End-to-end training with it (resume, 2 devices) is in
test_train.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnst_jax import loss_weights, stability, train_step
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams
from fnst_jax.transformer_net import stylize_padded

pytestmark = pytest.mark.usefixtures("fast_compile")

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2", style_weight=1e3)


def textured(count: int = 2, size: int = 24) -> jax.Array:
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.uniform(0, 255, (count, size, size, 3)), jnp.float32)


def test_warp_is_the_identity_or_an_exact_integer_shift():
    images = textured()
    same = stability.warp(images, jnp.ones(2), jnp.zeros((2, 2)))
    np.testing.assert_allclose(same, images, atol=1e-3)
    # A shift of (1, -2) moves content down one row and left two columns.
    moved = stability.warp(images, jnp.ones(2), jnp.array([[1.0, -2.0], [1.0, -2.0]]))
    np.testing.assert_allclose(moved[:, 1:, :-2], images[:, :-1, 2:], atol=1e-3)


def test_zoom_keeps_the_centre():
    image = jnp.zeros((1, 21, 21, 1)).at[0, 10, 10, 0].set(1.0)
    zoomed = stability.warp(image, jnp.array([1.02]), jnp.zeros((1, 2)))
    assert int(jnp.argmax(zoomed[0, :, :, 0])) == 10 * 21 + 10


def test_identity_network_has_the_noise_as_its_stability_term():
    """The yardstick: an identity network's term is the noise variance (the warp of the
    input and of the output are the same)."""
    images = textured(4, 32)
    value = float(stability.yardstick(jax.random.PRNGKey(0), images))
    assert value == pytest.approx(stability.NOISE_STD**2, rel=0.1)


def test_a_shard_draws_its_rows_of_the_global_draw():
    images = textured(4)
    key = jax.random.PRNGKey(3)
    whole, (zoom, shift) = stability.perturb(key, images)
    part, (part_zoom, part_shift) = stability.perturb(key, images[2:], first=2, total=4)
    np.testing.assert_array_equal(part_zoom, zoom[2:])
    np.testing.assert_array_equal(part_shift, shift[2:])
    np.testing.assert_allclose(part, whole[2:], atol=1e-4)
    # Shifts are sub-pixel to pixel sized, zooms small, and they differ between images.
    assert np.all(np.abs(shift) <= stability.MAX_SHIFT)
    assert np.all(np.abs(zoom - 1) <= stability.MAX_ZOOM)
    assert len(set(np.asarray(zoom).tolist())) == 4


def step_config(weight: float, dtype=jnp.float32) -> tuple[train_step.StepConfig, dict]:
    graphdef, params = train_step.init_model(jax.random.PRNGKey(0), dtype)
    spec = dataclasses.replace(SPEC, stability_weight=weight)
    return train_step.StepConfig(graphdef, spec, pad=2, dtype=dtype), params


@pytest.mark.slow
def test_weight_zero_is_the_perceptual_loss_exactly(vgg4):
    """stability_weight=0: the same terms, bit for bit, as the objective without the term."""
    config, params = step_config(0.0)
    images = textured()
    grams = style_grams(vgg4, images[:1], SPEC.style_layers)
    terms, _ = train_step.loss_and_grads(params, images, vgg4, grams, config)

    def plain(params):
        model = train_step.nnx.merge(config.graphdef, params)
        stylized = stylize_padded(model, images, config.pad)
        content = content_targets(vgg4, images, SPEC)
        return perceptual_loss(vgg4, stylized, content, grams, SPEC)

    (_, expected), _ = jax.value_and_grad(plain, has_aux=True)(params)
    assert terms.keys() == expected.keys() and "stability" not in terms
    for key in terms:
        assert float(terms[key]) == float(expected[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_step_with_the_term(vgg4, dtype):
    """The term is in the total, positive and finite; the step trains; the same step number
    draws the same perturbation (what exact resume needs), another step another one."""
    config, _ = step_config(50.0, dtype)
    tx = train_step.make_optimizer("adam", 1e-2)
    _, state = train_step.init_state(jax.random.PRNGKey(0), dtype, tx)
    images = textured()
    grams = style_grams(vgg4, images[:1], SPEC.style_layers)
    step = train_step.make_jit_step(train_step.make_mesh(), tx, config)
    copy = jax.tree.map(jnp.array, state)
    new, metrics = step(state, images, vgg4, grams)
    again, metrics_again = step(copy, images, vgg4, grams)
    assert float(metrics["raw_stability"]) > 0 and np.isfinite(float(metrics["grad_norm"]))
    assert float(metrics["stability"]) == pytest.approx(50.0 * float(metrics["raw_stability"]))
    parts = float(metrics["content"] + metrics["style"] + metrics["tv"] + metrics["stability"])
    assert float(metrics["total"]) == pytest.approx(parts, rel=1e-5)
    assert float(metrics_again["raw_stability"]) == float(metrics["raw_stability"])
    _, later = step(new, images, vgg4, grams)
    assert float(later["raw_stability"]) != float(metrics["raw_stability"])

    # Validation scores one fixed perturbation.
    evaluate = train_step.make_eval_fn(config, clip_to_pixels=True)
    first, _ = evaluate(again.params, images, vgg4, grams)
    second, _ = evaluate(again.params, images, vgg4, grams)
    assert float(first["raw_stability"]) == float(second["raw_stability"]) > 0


def test_auto_balance_scales_the_weight_by_the_yardstick():
    spec = dataclasses.replace(SPEC, content_weight=1.0, stability_weight=2.0, tv_weight=0.5)
    raw = {"raw_content": 1000.0, "raw_style": 10.0, "raw_tv": 20.0, "stability_yardstick": 4.0}
    balanced = loss_weights.balance_weights(spec, raw)
    expected = 2.0 * stability.YARDSTICK_RATIO * 1000.0 / 4.0
    assert balanced.stability_weight == pytest.approx(expected)
    assert balanced.style_weight == pytest.approx(SPEC.style_weight * 100.0)
    # Off stays off (and needs no yardstick).
    del raw["stability_yardstick"]
    assert loss_weights.balance_weights(SPEC, raw).stability_weight == 0.0
