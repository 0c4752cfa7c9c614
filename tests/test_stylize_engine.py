"""The stylize engine (`fnst_jax.stylize.engine.Stylizer`): uint8 in, uint8 out, any size,
bucketing and batching that do not change the result."""

from __future__ import annotations

import numpy as np
import pytest
from stylize_helpers import TEST_PAD, make_test_model, natural_image, save_test_model

from fnst_jax import image_io
from fnst_jax.stylize import Stylizer

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer(make_test_model(), pad=TEST_PAD, bucket=64, batch_size=2)


def test_mixed_sizes_share_one_compiled_shape():
    stylizer = Stylizer(make_test_model(), pad=8, bucket=64, batch_size=1)
    for height, width in [(17, 31), (40, 29), (48, 48)]:
        assert stylizer.stylize(natural_image(height, width)).shape == (height, width, 3)
    assert stylizer.compiled_shapes == {(1, 64, 64, 3)}


def test_uniform_image_stays_uniform_to_the_border(stylizer):
    """Reflection padding everywhere (pad, bucket, every conv) keeps a flat image flat;
    zero padding anywhere would darken or tint a band along the border."""
    flat = np.full((37, 23, 3), (200, 120, 40), np.uint8)
    result = stylizer.stylize(flat).astype(int)
    assert result.shape == (37, 23, 3)
    assert np.ptp(result.reshape(-1, 3), axis=0).max() <= 1


def test_stylize_is_the_rounded_float_result(stylizer):
    image = natural_image(30, 20, seed=5)
    styled = stylizer.stylize(image)
    assert styled.dtype == np.uint8 and styled.shape == (30, 20, 3)
    np.testing.assert_array_equal(styled, image_io.to_uint8(stylizer.stylize_float(image)))
    # Not the input, not flat: the test model really transforms.
    assert np.abs(styled.astype(int) - image).mean() > 10 and styled.std() > 10


def test_batch_keeps_order_and_matches_single_images(stylizer):
    """Grouping and batching do not change an image's result: each is normalised with its
    own statistics. Only float rounding differs between compiled batch sizes (<= 1 level)."""
    images = [natural_image(24, 24, 1), natural_image(17, 31, 2), natural_image(24, 24, 3)]
    batch = stylizer.stylize_batch(images)
    assert [b.shape for b in batch] == [(24, 24, 3), (17, 31, 3), (24, 24, 3)]
    for image, result in zip(images, batch, strict=True):
        single = stylizer.stylize(image)
        assert np.abs(single.astype(int) - result).max() <= 1
    assert (2, 64, 64, 3) in stylizer.compiled_shapes  # the two 24x24 images ran together


def test_preserve_color_keeps_input_chroma(stylizer):
    image = natural_image(32, 32, seed=4)
    result = stylizer.stylize(image, preserve_color=True).astype(np.float32)
    plain = stylizer.stylize(image).astype(np.float32)
    expected = image_io.to_uint8(image_io.transfer_luminance(stylizer.stylize_float(image), image))
    np.testing.assert_array_equal(result, expected)
    assert np.abs(result - plain).mean() > 5  # the colours really changed back


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))]
)
def test_rejects_anything_but_uint8_rgb(stylizer, bad):
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        stylizer.stylize_batch([bad])


def test_from_model_file_takes_the_training_pad(tmp_path):
    path = save_test_model(tmp_path / "candy.npz")
    assert Stylizer.from_model_file(path).pad == TEST_PAD
    overridden = Stylizer.from_model_file(path, pad=0, bucket=4, dtype="bfloat16")
    assert (overridden.pad, overridden.bucket) == (0, 4)


def test_overlap_larger_than_half_a_tile_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        Stylizer(make_test_model(), tile=64, overlap=40)
