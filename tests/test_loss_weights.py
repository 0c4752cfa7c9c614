"""The loss weights: the config's, balanced on the first batch, and as checkpoints record them.
The stability term's balance is tested in test_stability.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from fnst_jax import loss_weights, train_step
from fnst_jax.losses import LossSpec, style_grams, tv_loss

SPEC = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu2_2")


def test_balance_weights_equalises_the_first_batch_terms():
    spec = LossSpec(style_weight=2.0, content_weight=3.0, tv_weight=0.5)
    raw = {"raw_content": 4.0, "raw_style": 0.01, "raw_tv": 100.0}
    balanced = loss_weights.balance_weights(spec, raw)
    content = 3.0 * 4.0
    # Style weight 2.0: the style term starts at twice the content term; TV 0.5: half.
    assert balanced.content_weight == 3.0
    assert balanced.style_weight * raw["raw_style"] == pytest.approx(2.0 * content)
    assert balanced.tv_weight * raw["raw_tv"] == pytest.approx(0.5 * content)
    # A zero or non-finite raw term leaves its weight as configured.
    unchanged = loss_weights.balance_weights(spec, dict(raw, raw_style=0.0, raw_tv=float("nan")))
    assert (unchanged.style_weight, unchanged.tv_weight) == (2.0, 0.5)


def test_balance_weights_per_style():
    spec = LossSpec(style_weight=2.0, style_weights=(2.0, 6.0))
    raw = {"raw_content": 4.0, "raw_style": 0.01, "raw_style/1": 0.1, "raw_tv": 1.0}
    balanced = loss_weights.balance_weights(spec, raw)
    assert balanced.style_weights[0] * 0.01 == pytest.approx(2.0 * 4.0)
    assert balanced.style_weights[1] * 0.1 == pytest.approx(6.0 * 4.0)  # multiplier 3


def test_config_weights_and_their_record():
    """Several styles: a weight per style, the style weight times its multiplier; the record
    a checkpoint keeps gives the same spec back."""
    config = smoke.get_config().loss
    one = loss_weights.loss_spec_from_config(config)
    assert one.style_weights is None and one.style_layers == ("relu1_1", "relu2_1")
    config.style_multipliers = (1.0, 3.0)
    config.style_weight = 2.0
    two = loss_weights.loss_spec_from_config(config, num_styles=2)
    assert two.style_weights == (2.0, 6.0)
    record = loss_weights.weights_of(two.with_weights(style_weights=(5.0, 7.0), tv_weight=0.3))
    assert one.with_weights(**record) == two.with_weights(style_weights=(5.0, 7.0), tv_weight=0.3)
    # A base model's one style given a row of its own: multi_style without several styles.
    config.style_multipliers = ()
    assert loss_weights.loss_spec_from_config(config, multi_style=True).style_weights == (2.0,)


@pytest.mark.usefixtures("fast_compile")
def test_auto_balance_measures_each_style_on_the_first_batch(vgg4, monkeypatch):
    """Two styles of multipliers 1 and 2: each style's balanced weight times its raw style
    loss on the first batch is 1x and 2x the content loss; TV is balanced on the batch."""
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 255, (2, 16, 16, 3)), jnp.float32)
    styles = jnp.asarray(rng.uniform(0, 255, (2, 16, 16, 3)), jnp.float32)
    grams = style_grams(vgg4, styles, SPEC.style_layers)  # a row per style
    graphdef, params = train_step.init_model(jax.random.PRNGKey(0), jnp.float32, num_styles=2)
    spec = SPEC.with_weights(style_weights=(1.0, 2.0), style_weight=1.0, tv_weight=0.5)
    config = train_step.StepConfig(graphdef, spec, pad=2, dtype=jnp.float32, num_styles=2)
    probe = train_step.make_eval_fn(config)  # one compilation for auto_balance and the check
    monkeypatch.setattr(loss_weights, "make_eval_fn", lambda step_config: probe)
    balanced = loss_weights.auto_balance(
        config, params=params, first_batch=images, vgg=vgg4, target_grams=grams
    )
    terms, _ = probe(params, images, vgg4, grams, 0)
    content = spec.content_weight * float(terms["raw_content"])
    for style, multiplier in enumerate((1.0, 2.0)):
        raw_style = float(probe(params, images, vgg4, grams, style)[0]["raw_style"])
        assert balanced.style_weights[style] * raw_style == pytest.approx(multiplier * content)
    assert balanced.tv_weight * float(tv_loss(images)) == pytest.approx(0.5 * content)
    assert balanced.content_weight == spec.content_weight
