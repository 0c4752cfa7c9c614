"""VGG19 features: tap names and shapes, preprocessing conventions, truncated weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnst_jax.errors import UserError
from fnst_jax.vgg import (
    CAFFE_MEAN_BGR,
    CONV_CHANNELS,
    CONV_LAYERS,
    RELU_LAYERS,
    TORCH_MEAN,
    TORCH_STD,
    VGGLayerError,
    layer_depth,
    preprocess,
)

# Tiny shapes: compile time dominates, so compile with few optimisations (one test at a time).
pytestmark = pytest.mark.usefixtures("fast_compile")


def _images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32))


def test_layer_tables():
    assert len(CONV_LAYERS) == len(RELU_LAYERS) == 16
    assert RELU_LAYERS[0] == "relu1_1" and RELU_LAYERS[-1] == "relu5_4"
    assert CONV_CHANNELS["conv1_1"] == (3, 64) and CONV_CHANNELS["conv4_1"] == (256, 512)
    assert layer_depth("relu3_1") == 4
    with pytest.raises(ValueError, match="unknown VGG19 layer 'relu6_1'"):
        layer_depth("relu6_1")
    # A mistyped config layer is the user's to fix: one line at the entry point, no traceback.
    with pytest.raises(UserError):
        layer_depth("relu6_1")
    assert issubclass(VGGLayerError, UserError) and issubclass(VGGLayerError, ValueError)


def test_preprocess_conventions():
    x = np.random.default_rng(0).uniform(0, 255, (1, 4, 5, 3)).astype(np.float32)
    torch_style = np.asarray(preprocess(jnp.asarray(x), "torch"))
    np.testing.assert_allclose(
        torch_style, (x / 255 - TORCH_MEAN) / TORCH_STD, rtol=1e-5, atol=1e-5
    )
    caffe = np.asarray(preprocess(jnp.asarray(x), "caffe"))
    np.testing.assert_allclose(caffe, x[..., ::-1] - CAFFE_MEAN_BGR, atol=1e-4)
    with pytest.raises(ValueError, match="unknown VGG preprocessing"):
        preprocess(jnp.asarray(x), "tf")


def test_all_taps_shapes(random_vgg):
    x = _images((2, 32, 48, 3))
    features = random_vgg(x, RELU_LAYERS)
    assert set(features) == set(RELU_LAYERS)
    for relu, conv in zip(RELU_LAYERS, CONV_LAYERS, strict=True):
        block = int(relu[4])
        stride = 2 ** (block - 1)
        assert features[relu].shape == (2, 32 // stride, 48 // stride, CONV_CHANNELS[conv][1])
        assert bool(jnp.all(features[relu] >= 0))  # post-ReLU


def test_only_requested_taps_returned(random_vgg):
    x = _images((1, 16, 16, 3))
    features = random_vgg(x, ("relu2_2", "relu1_1"))
    assert set(features) == {"relu1_1", "relu2_2"}
    # The same tap computed in a deeper request is identical.
    deeper = random_vgg(x, ("relu3_1", "relu2_2"))
    np.testing.assert_allclose(np.asarray(features["relu2_2"]), np.asarray(deeper["relu2_2"]))


def test_truncated_weights_stop_at_their_depth(small_vgg):
    x = _images((1, 16, 16, 3))
    assert small_vgg.available_layers[-1] == "relu3_4"
    assert small_vgg(x, ("relu3_4",))["relu3_4"].shape == (1, 4, 4, 256)
    with pytest.raises(ValueError, match="relu4_1.*deeper than the weights provide"):
        small_vgg(x, ("relu4_1",))


@pytest.mark.slow
def test_no_gradient_into_weights(small_vgg):
    x = _images((1, 8, 8, 3))

    def loss(vgg):
        return jnp.sum(vgg(x, ("relu1_2",))["relu1_2"])

    grads = jax.grad(loss)(small_vgg)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    # ...but gradients do flow into the images.
    image_grad = jax.grad(lambda im: jnp.sum(small_vgg(im, ("relu1_2",))["relu1_2"]))(x)
    assert float(jnp.abs(image_grad).max()) > 0
