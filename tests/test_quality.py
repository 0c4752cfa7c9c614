"""Quality figures: 1.0 / 0.0 for the unchanged photo, high for the style image itself, exact
luminance and contrast, the style image at the evaluated size, per-image independence, and
the real VGG on a real photo when ../shared/data is there."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fnst_jax import image_io, quality
from fnst_jax.losses import style_grams
from fnst_jax.vgg import VGGLayerError


def _image(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random pattern with some noise: features at every VGG layer."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = [np.sin(x / rng.uniform(2, 6) + rng.uniform(0, 6)) * np.cos(y / 4) for _ in range(3)]
    noisy = np.stack(channels, -1) * 90 + 128 + rng.normal(0, 8, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _stripes(h: int, w: int) -> np.ndarray:
    """A style unlike `_image`: hard diagonal colour stripes."""
    y, x = np.mgrid[0:h, 0:w]
    band = ((x + y) // 5) % 3
    palette = np.array([[230, 40, 30], [20, 60, 220], [250, 230, 40]], np.uint8)
    return palette[band]


SIZE = 32


@pytest.fixture(scope="module")
def photos() -> jnp.ndarray:
    return jnp.asarray(np.stack([_image(0, SIZE, SIZE), _image(1, SIZE, SIZE)]), jnp.float32)


@pytest.fixture(scope="module")
def targets(small_vgg) -> quality.StyleTargets:
    return quality.StyleTargets(small_vgg, _stripes(40, 48))


def test_the_unchanged_photo_scores_one_and_zero(targets, photos):
    """Exactly: the output's features are the photo's, so the ratios are 1 and the change 0."""
    for result in quality.measure(targets, photos, photos):
        assert result["style_reduction"] == 1.0
        assert result["content_change"] == 0.0
        assert result["luminance_ratio"] == 1.0 and result["contrast_ratio"] == 1.0
        assert result["luminance"] == result["photo_luminance"] > 0
        assert result["contrast"] == result["photo_contrast"] > 0
        assert set(result) == set(quality.KEYS)


def test_the_style_image_as_output_is_highly_stylized_and_far_from_the_photo(targets, photos):
    """The style image itself (stretched to the photo's square: not its exact Grams) is far
    closer to the style's statistics than any photo: measured 37x and 40x on these images
    with the random VGG (a halfway blend: 1.2x and 1.3x); anything above 10x says the ratio
    points the right way. Its content is another image's: measured 1.5 and 1.8 (the blend:
    0.34 and 0.37)."""
    style = np.asarray(Image.fromarray(_stripes(40, 48)).resize((SIZE, SIZE), Image.LANCZOS))
    outputs = jnp.broadcast_to(jnp.asarray(style, jnp.float32), photos.shape)
    for result in quality.measure(targets, photos, outputs):
        assert result["style_reduction"] > 10
        assert result["content_change"] > 0.5
    # A photo moved partway toward the style changes less content than the style image does.
    halfway = quality.measure(targets, photos, 0.5 * photos + 0.5 * outputs)
    full = quality.measure(targets, photos, outputs)
    for half, whole in zip(halfway, full, strict=True):
        assert 0 < half["content_change"] < whole["content_change"]


def test_luminance_and_contrast_are_bt601_luma_mean_and_std(targets, photos):
    dimmed = quality.measure(targets, photos, photos * 0.5)
    shifted = quality.measure(targets, photos, photos * 0.5 + 64)
    for i, (dim, shift) in enumerate(zip(dimmed, shifted, strict=True)):
        luma = np.asarray(photos[i], np.float64) @ np.array([0.299, 0.587, 0.114])
        # float32 sums of 1024 pixels: relative rounding well below 1e-5.
        assert dim["photo_luminance"] == pytest.approx(luma.mean(), rel=1e-5)
        assert dim["photo_contrast"] == pytest.approx(luma.std(), rel=1e-5)
        assert dim["luminance_ratio"] == pytest.approx(0.5, rel=1e-5)
        assert dim["contrast_ratio"] == pytest.approx(0.5, rel=1e-5)
        assert shift["luminance"] == pytest.approx(0.5 * luma.mean() + 64, rel=1e-5)
        assert shift["contrast_ratio"] == pytest.approx(0.5, rel=1e-4)


def test_the_style_image_is_taken_at_the_evaluated_longest_side(small_vgg):
    style = _stripes(40, 48)
    targets = quality.StyleTargets(small_vgg, style)
    assert image_io.resize_longest_side(style, 32).shape == (27, 32, 3)  # 40 * 32 / 48 = 26.7
    assert image_io.resize_longest_side(style, 96).shape == (80, 96, 3)
    grams = targets.at(32)
    assert targets.at(32) is grams  # computed once a size
    expected = style_grams(
        small_vgg,
        jnp.asarray(image_io.resize_longest_side(style, 32), jnp.float32)[None],
        quality.STYLE_LAYERS,
    )
    for layer in quality.STYLE_LAYERS:
        np.testing.assert_allclose(grams[layer], expected[layer], rtol=1e-5, atol=1e-7)
    # Another size, other Grams: the texture's scale changes.
    assert not np.allclose(targets.at(96)["relu3_1"], grams["relu3_1"], rtol=1e-2)
    # measure picks the size from the images (a 20 x 32 batch: longest side 32).
    photo = jnp.asarray(_image(3, 20, 32), jnp.float32)[None]
    by_measure = quality.measure(targets, photo, photo * 0.8)[0]
    direct = quality.figures(small_vgg, photo, photo * 0.8, grams)
    assert by_measure["style_reduction"] == pytest.approx(float(direct["style_reduction"][0]))


def test_each_image_is_scored_on_its_own(targets, photos, small_vgg):
    outputs = photos[::-1] * 0.7 + 30
    batch = quality.measure(targets, photos, outputs)
    for i in range(2):
        (alone,) = quality.measure(targets, photos[i : i + 1], outputs[i : i + 1])
        for key in quality.KEYS:  # batched vs single convolutions: float32 rounding
            assert batch[i][key] == pytest.approx(alone[key], rel=1e-4), key
    means = quality.mean_figures(small_vgg, photos, outputs, targets.at(SIZE))
    for key in quality.KEYS:
        assert means[key] == pytest.approx(np.mean([r[key] for r in batch]), rel=1e-5)


def test_weights_too_shallow_for_the_figures_are_refused(vgg4, small_vgg):
    assert quality.has_layers(small_vgg) and not quality.has_layers(vgg4)
    with pytest.raises(VGGLayerError, match="relu3_1"):
        quality.StyleTargets(vgg4, _stripes(8, 8))


def test_real_vgg_on_a_real_photo(shared_data):
    """The offline VGG19 (conv1_1..conv3_4) on a real photo at 64 px and the mosaic style."""
    from fnst_jax.vgg_weights import load_vgg

    vgg = load_vgg(str(shared_data / "vgg19_conv1_1-conv3_4_keras.npz"))
    photo_path = sorted((shared_data / "photos").glob("*.jpg"))[0]
    photo = np.asarray(Image.fromarray(image_io.read_image(photo_path).rgb).resize((64, 64)))
    style = image_io.read_image(shared_data / "styles" / "mosaic.jpg").rgb
    targets = quality.StyleTargets(vgg, style)
    photos = jnp.asarray(photo, jnp.float32)[None]
    (unchanged,) = quality.measure(targets, photos, photos)
    assert (unchanged["style_reduction"], unchanged["content_change"]) == (1.0, 0.0)
    mosaic = jnp.asarray(np.asarray(Image.fromarray(style).resize((64, 64))), jnp.float32)[None]
    (as_style,) = quality.measure(targets, photos, mosaic)
    # Measured on the first photo (bsd_101085) at 64 px: the mosaic itself scores 31x and
    # changes content by 1.4 (another photo at 128 px: 48x and 2.0). Bounds well inside.
    assert as_style["style_reduction"] > 5 and as_style["content_change"] > 1
