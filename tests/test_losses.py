"""Perceptual losses against direct numpy computations; LossSpec validation."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from fnst_jax.errors import UserError
from fnst_jax.losses import (
    LossSpec,
    content_loss,
    content_targets,
    gram_matrix,
    perceptual_loss,
    style_grams,
    style_layer_losses,
    style_loss,
    tv_loss,
)

# Tiny shapes: compile time dominates, so compile with few optimisations (one test at a time).
pytestmark = pytest.mark.usefixtures("fast_compile")


def _rand(shape, seed=0, high=1.0):
    return np.random.default_rng(seed).uniform(0, high, shape).astype(np.float32)


def _np_gram(f):
    n, h, w, c = f.shape
    flat = f.reshape(n, h * w, c).astype(np.float64)
    return np.einsum("npc,npd->ncd", flat, flat) / (c * h * w)


def test_gram_matrix_matches_numpy():
    f = _rand((2, 5, 7, 6))
    gram = np.asarray(gram_matrix(jnp.asarray(f)))
    assert gram.shape == (2, 6, 6)
    np.testing.assert_allclose(gram, _np_gram(f), rtol=1e-5)
    np.testing.assert_allclose(gram, np.swapaxes(gram, 1, 2), rtol=1e-6)


def test_content_loss_matches_numpy():
    a, b = _rand((2, 4, 4, 3), 0), _rand((2, 4, 4, 3), 1)
    np.testing.assert_allclose(
        float(content_loss(jnp.asarray(a), jnp.asarray(b))), np.mean((a - b) ** 2), rtol=1e-5
    )


def test_style_losses_match_numpy():
    features = {"relu1_1": _rand((2, 6, 6, 4), 0), "relu2_1": _rand((2, 3, 3, 8), 1)}
    targets = {
        "relu1_1": _np_gram(_rand((1, 5, 5, 4), 2)),
        "relu2_1": _np_gram(_rand((1, 4, 4, 8), 3)),
    }
    expected = {
        layer: np.mean((_np_gram(features[layer]) - targets[layer]) ** 2) for layer in features
    }
    jf = {k: jnp.asarray(v) for k, v in features.items()}
    jt = {k: jnp.asarray(v, jnp.float32) for k, v in targets.items()}
    per_layer = style_layer_losses(jf, jt)
    for layer in features:
        np.testing.assert_allclose(float(per_layer[layer]), expected[layer], rtol=1e-4)
    weighted = style_loss(jf, jt, {"relu1_1": 2.0, "relu2_1": 0.5})
    np.testing.assert_allclose(
        float(weighted), 2.0 * expected["relu1_1"] + 0.5 * expected["relu2_1"], rtol=1e-4
    )


def test_tv_loss_matches_numpy():
    x = _rand((2, 5, 6, 3), high=255.0)
    expected = np.mean(np.abs(np.diff(x, axis=1))) + np.mean(np.abs(np.diff(x, axis=2)))
    np.testing.assert_allclose(float(tv_loss(jnp.asarray(x))), expected, rtol=1e-5)
    assert float(tv_loss(jnp.full((1, 4, 4, 3), 7.0))) == 0.0


def test_loss_spec_validation():
    with pytest.raises(ValueError, match="unknown VGG19 layer 'relu9_9'"):
        LossSpec(style_layers=("relu1_1", "relu9_9"))
    with pytest.raises(ValueError, match="unknown VGG19 layer 'conv2_2'"):
        LossSpec(content_layer="conv2_2")
    with pytest.raises(ValueError, match="at least one"):
        LossSpec(style_layers=())
    with pytest.raises(ValueError, match="style_layer_weights has 1 entries"):
        LossSpec(style_layers=("relu1_1", "relu2_1"), style_layer_weights=(1.0,))
    for bad in ({"style_layers": ()}, {"content_layer": "conv2_2"}):  # config errors: UserError
        with pytest.raises(UserError):
            LossSpec(**bad)
    spec = LossSpec(style_layers=("relu1_1", "relu2_1"), content_layer="relu1_1")
    assert spec.vgg_layers == ("relu1_1", "relu2_1")
    assert spec.layer_weights == {"relu1_1": 1.0, "relu2_1": 1.0}
    assert spec.with_weights(style_weight=3).style_weight == 3.0
    hash(spec)  # jit-static
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.style_weight = 2.0


def test_perceptual_loss_terms(small_vgg):
    spec = LossSpec(
        style_layers=("relu1_2", "relu2_1"),
        content_layer="relu2_2",
        style_weight=10.0,
        content_weight=2.0,
        tv_weight=0.5,
        style_layer_weights=(1.0, 3.0),
    )
    images = jnp.asarray(_rand((2, 16, 16, 3), 0, 255.0))
    stylized = jnp.asarray(_rand((2, 16, 16, 3), 1, 255.0))
    grams = style_grams(small_vgg, jnp.asarray(_rand((1, 24, 24, 3), 2, 255.0)), spec.style_layers)
    content = content_targets(small_vgg, images, spec)
    total, terms = perceptual_loss(small_vgg, stylized, content, grams, spec)

    features = small_vgg(stylized, spec.vgg_layers)
    raw_content = float(content_loss(features["relu2_2"], content))
    per_layer = {k: float(v) for k, v in style_layer_losses(features, grams).items()}
    raw_style = per_layer["relu1_2"] + 3.0 * per_layer["relu2_1"]
    raw_tv = float(tv_loss(stylized))
    np.testing.assert_allclose(float(terms["raw_content"]), raw_content, rtol=1e-5)
    np.testing.assert_allclose(float(terms["raw_style"]), raw_style, rtol=1e-5)
    np.testing.assert_allclose(float(terms["raw_tv"]), raw_tv, rtol=1e-5)
    np.testing.assert_allclose(
        float(total), 2.0 * raw_content + 10.0 * raw_style + 0.5 * raw_tv, rtol=1e-5
    )
    assert float(terms["total"]) == float(total)
    assert set(terms) >= {"content", "style", "tv", "style/relu1_2", "style/relu2_1"}
    assert raw_content > 0 and raw_style > 0
    # Stylizing to the content images exactly leaves no content loss.
    _, same = perceptual_loss(small_vgg, images, content, grams, spec)
    assert float(same["raw_content"]) == pytest.approx(0.0, abs=1e-6)
