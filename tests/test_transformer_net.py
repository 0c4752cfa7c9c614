"""TransformerNet: shapes at any size, parameter count, padding conventions, the box-aware
forward that buckets and tiles use, bf16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fnst_jax.export import flatten_params, set_flat_params
from fnst_jax.model_file import StyleError, style_weights
from fnst_jax.transformer_net import (
    InstanceNorm,
    NormControl,
    ReflectConv,
    TransformerNet,
    count_params,
    num_styles_of,
    reflect_pad,
    single_style_model,
    stylize_padded,
    upsample_nearest,
)

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile time dominates here


@pytest.fixture(scope="module")
def model() -> TransformerNet:
    return TransformerNet(rngs=nnx.Rngs(0))


def _images(shape, seed=0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32))


def test_parameter_count(model):
    # The count of the PyTorch fast_neural_style TransformerNet.
    assert count_params(model) == 1_679_235


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 37, 53, 3), (1, 64, 64, 3), (1, 33, 30, 3)])
def test_output_has_input_shape(model, shape):
    y = model(_images(shape))
    assert y.shape == shape
    assert y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.slow
def test_batch_items_are_independent(model):
    # Instance norm: an image's output must not depend on what else is in the batch.
    x = _images((2, 32, 40, 3))
    both = model(x)
    alone = model(x[1:])
    np.testing.assert_allclose(np.asarray(both[1:]), np.asarray(alone), atol=1e-3)


@pytest.mark.slow
def test_stylize_padded_shape_and_clipping(model):
    x = _images((1, 20, 28, 3))
    assert stylize_padded(model, x, 8).shape == x.shape
    # A pad larger than the image is clipped to what reflection allows.
    assert stylize_padded(model, x, 50).shape == x.shape


def test_stylize_padded_is_the_network_on_the_reflected_image(model):
    """Checked against padding done independently (numpy's reflect, then the crop)."""
    x = _images((1, 21, 26, 3), seed=4)
    padded = np.pad(np.asarray(x), ((0, 0), (6, 6), (6, 6), (0, 0)), mode="reflect")
    expected = np.asarray(model(jnp.asarray(padded)))[:, 6:-6, 6:-6]
    np.testing.assert_allclose(np.asarray(stylize_padded(model, x, 6)), expected, atol=1e-3)


@pytest.mark.parametrize("size", [1, 2, 3, 6])
@pytest.mark.parametrize("pad", [0, 1, 4, 9])
def test_reflect_pad_inside_a_box_is_numpy_reflect(size, pad):
    """Reflection at the box edges, for a box that is the whole array, is numpy's reflect
    mode (including pads longer than the axis)."""
    x = jnp.arange(2 * size * 5, dtype=jnp.float32).reshape(2, size, 5, 1)
    box = jnp.array([[0, size, 0, 5]] * 2, jnp.int32)
    expected = np.pad(np.asarray(x), ((0, 0), (pad, pad + 1), (pad, 2), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(np.asarray(reflect_pad(x, pad, pad + 1, pad, 2, box)), expected)


@pytest.mark.slow
def test_forward_in_a_box_is_the_reference_forward(model):
    """An image laid out in a larger array (garbage around it, different offsets per image)
    comes out exactly as the network run on the image alone: the bucketing contract."""
    rng = np.random.default_rng(5)
    images = [rng.uniform(0, 255, (24, 36, 3)), rng.uniform(0, 255, (16, 20, 3))]
    offsets = [(8, 12), (4, 0)]
    array = rng.uniform(0, 255, (2, 48, 56, 3)).astype(np.float32)
    boxes = []
    for index, (image, (top, left)) in enumerate(zip(images, offsets, strict=True)):
        array[index, top : top + image.shape[0], left : left + image.shape[1]] = image
        boxes.append((top, top + image.shape[0], left, left + image.shape[1]))
    output, records = model.forward_with_statistics(
        jnp.asarray(array), jnp.asarray(boxes, jnp.int32)
    )
    output = np.asarray(output)
    assert len(records) == 15  # every instance norm measured inside its box
    assert all(record.summary is None for record in records)  # no sum box asked for
    for index, (image, (top, left)) in enumerate(zip(images, offsets, strict=True)):
        expected = np.asarray(model(jnp.asarray(image[None], jnp.float32)))[0]
        got = output[index, top : top + image.shape[0], left : left + image.shape[1]]
        np.testing.assert_allclose(got, expected, atol=2e-3)  # measured ~4e-6 of 0..255


@pytest.mark.slow
def test_given_statistics_and_sums(model):
    """Normalising with the moments an image measures itself changes nothing, and the
    summaries over the whole box are those moments (what exact tiling builds on)."""
    x = _images((1, 32, 40, 3), seed=6)
    box = jnp.array([[0, 32, 0, 40]], jnp.int32)
    reference, measured = model.forward_with_statistics(x, box, NormControl(sum_box=box))
    used = [record.moments for record in measured]
    given, _ = model.forward_with_statistics(x, box, NormControl(given=used))
    np.testing.assert_allclose(np.asarray(given), np.asarray(reference), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(model.forward(x, box)), np.asarray(reference))
    for (mean, var), (count, sum_mean, squares) in measured:
        np.testing.assert_allclose(np.asarray(sum_mean), np.asarray(mean), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            np.asarray(squares / count), np.asarray(var), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("stride", [1, 2])
def test_reflect_conv_equals_valid_conv_of_padded_input(stride):
    # ReflectConv computes stride-1 layers as SAME conv + crop for speed; it must give exactly
    # the torch numbers: a VALID conv of the reflect-padded input.
    layer = ReflectConv(4, 5, 3, stride, rngs=nnx.Rngs(1))
    x = _images((1, 11, 13, 4), seed=1)
    padded = reflect_pad(x, 1, 1, 1, 1)
    expected = (
        jax.lax.conv_general_dilated(
            padded,
            layer.conv.kernel[...],
            (stride, stride),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        + layer.conv.bias[...]
    )
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(expected), rtol=1e-5, atol=1e-3)


def test_upsample_nearest():
    x = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(1, 2, 3, 2)
    y = np.asarray(upsample_nearest(x))
    assert y.shape == (1, 4, 6, 2)
    np.testing.assert_array_equal(y, np.repeat(np.repeat(np.asarray(x), 2, 1), 2, 2))


@pytest.mark.slow
def test_bfloat16_model_stays_close_to_float32(model):
    bf16 = TransformerNet(dtype=jnp.bfloat16, rngs=nnx.Rngs(0))  # same seed: same parameters
    for (_, a), (_, b) in zip(
        jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)),
        jax.tree_util.tree_leaves_with_path(nnx.state(bf16, nnx.Param)),
        strict=True,
    ):
        assert b.dtype == jnp.float32  # parameters stay float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = _images((1, 48, 40, 3))
    y32, y16 = np.asarray(model(x)), np.asarray(bf16(x))
    assert y16.dtype == np.float32 and y16.shape == y32.shape
    relative = np.linalg.norm(y16 - y32) / np.linalg.norm(y32)
    # Measured 2.0e-2 (bf16 has an 8-bit mantissa); 5e-2 still catches a broken cast.
    assert relative < 5e-2, relative


# --- many styles in one network (conditional instance norm) ---


def _multi_style_model(num_styles: int, seed: int = 0) -> TransformerNet:
    """A multi-style model whose norm rows all differ (as after training)."""
    multi = TransformerNet(num_styles=num_styles, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for _, norm in nnx.iter_modules(multi):
        if isinstance(norm, InstanceNorm):
            norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, norm.scale.shape), jnp.float32)
            norm.bias[...] = jnp.asarray(rng.normal(0, 0.3, norm.bias.shape), jnp.float32)
    return multi


def _one_style_with_rows(multi: TransformerNet, weights: np.ndarray) -> TransformerNet:
    """A one-style model with the multi-style model's convolutions and, in every norm, the
    given combination of its rows."""
    single = TransformerNet(rngs=nnx.Rngs(1))
    flat_multi = flatten_params(nnx.to_pure_dict(nnx.state(multi, nnx.Param)))
    flat = {
        name: (np.asarray(weights) @ value if value.ndim == 2 else value)
        for name, value in flat_multi.items()
    }
    set_flat_params(single, flat)
    return single


def test_one_style_model_is_unchanged(model):
    assert model.num_styles == 1
    assert num_styles_of(nnx.to_pure_dict(nnx.state(model, nnx.Param))) == 1
    x = _images((1, 24, 24, 3), seed=9)
    # A one-style model ignores the style input.
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x, np.ones((1, 1)))))


def test_multi_style_parameters():
    multi = TransformerNet(num_styles=4, rngs=nnx.Rngs(0))
    single = TransformerNet(rngs=nnx.Rngs(0))
    assert num_styles_of(nnx.to_pure_dict(nnx.state(multi, nnx.Param))) == 4
    # 15 norms x (scale + shift) x C channels, per extra style; convolutions shared.
    norm_channels = 32 + 64 + 128 + 10 * 128 + 64 + 32
    assert count_params(multi) - count_params(single) == 3 * 2 * norm_channels
    with pytest.raises(StyleError, match="needs a style input"):
        multi(_images((1, 16, 16, 3)))


@pytest.mark.slow
def test_each_style_and_a_mix_are_their_norm_rows():
    """One-hot weights pick each norm's row; convex weights mix the rows (per image in one
    batch), checked against one-style models built from those rows."""
    multi = _multi_style_model(3)
    x = _images((3, 28, 20, 3), seed=2)
    mix = np.array([0.25, 0.0, 0.75], np.float32)
    weights = np.stack([style_weights(3, 0)[0], style_weights(3, 2)[0], mix])
    batch = np.asarray(stylize_padded(multi, x, 4, jnp.asarray(weights)))
    for index in range(3):
        single = _one_style_with_rows(multi, weights[index])
        expected = np.asarray(stylize_padded(single, x[index : index + 1], 4))[0]
        np.testing.assert_allclose(batch[index], expected, atol=2e-3)
    # Different styles give different outputs.
    assert np.abs(batch[0] - np.asarray(stylize_padded(multi, x[:1], 4, weights[1:2]))[0]).max() > 1


def test_single_style_model_is_the_model_in_that_style():
    multi = _multi_style_model(3, seed=4)
    x = _images((1, 24, 20, 3), seed=5)
    for style in (2, [0.5, 0.5, 0.0]):
        single = single_style_model(multi, style)
        assert single.num_styles == 1
        expected = stylize_padded(multi, x, 4, jnp.asarray(style_weights(3, style)))
        np.testing.assert_allclose(
            np.asarray(stylize_padded(single, x, 4)), np.asarray(expected), atol=2e-3
        )
    one = TransformerNet(rngs=nnx.Rngs(0))
    assert single_style_model(one, 0) is one


def test_style_weights():
    np.testing.assert_array_equal(style_weights(3, 1, batch=2), [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(style_weights(2, [1, 3]), [[0.25, 0.75]])
    with pytest.raises(StyleError, match="out of range"):
        style_weights(3, 3)
    with pytest.raises(StyleError, match="3 style weights for a 2-style"):
        style_weights(2, [1, 1, 1])
    with pytest.raises(StyleError, match=">= 0"):
        style_weights(2, [1, -1])
    with pytest.raises(StyleError, match=">= 0"):
        style_weights(2, [0, 0])
