"""The stylize engine (`fnst_jax.stylize.engine.Stylizer`): uint8 in, uint8 out, any size,
exactly the reference forward (`transformer_net.stylize_padded`) whatever the bucketing and
batching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stylize_helpers import TEST_PAD, make_test_model, natural_image, save_test_model

from fnst_jax import image_io
from fnst_jax.stylize import Stylizer
from fnst_jax.transformer_net import stylize_padded

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer(make_test_model(), pad=TEST_PAD, bucket=64, batch_size=2)


def test_mixed_sizes_share_one_compiled_shape():
    stylizer = Stylizer(make_test_model(), pad=8, bucket=64, batch_size=1)
    for height, width in [(17, 31), (40, 29), (48, 48)]:
        assert stylizer.stylize(natural_image(height, width)).shape == (height, width, 3)
    assert stylizer.compiled_shapes == {(1, 64, 64, 3)}


@pytest.mark.slow
def test_compile_ahead_leaves_nothing_to_compile_for_that_shape(compiled_programs):
    """`Stylizer.compile` (a service's warm-up) compiles the network for a batch shape
    without running it; a later batch of that shape compiles no network program, and one of
    another batch size still compiles one (so the count can see a network compile)."""
    stylizer = Stylizer(make_test_model(), pad=TEST_PAD, bucket=64, batch_size=4)
    ahead = compiled_programs(lambda: stylizer.compile(3, (64, 64)))
    assert [name for name in ahead if "_forward" in name] == ["jit(_forward)"]
    assert stylizer.compiled_shapes == {(4, 64, 64, 3)}  # 3 images run as 4

    def network_compiles(count: int) -> list[str]:
        images = [natural_image(24, 20, seed) for seed in range(count)]
        names = compiled_programs(lambda: stylizer.stylize_batch(images), clear=False)
        return [name for name in names if "_forward" in name]

    assert network_compiles(3) == []
    assert network_compiles(2) == ["jit(_forward)"]


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
    assert (2, 64, 64, 3) in stylizer.compiled_shapes  # one bucket: mixed sizes run together


_reference = jax.jit(stylize_padded, static_argnums=2)

# Odd, prime, one more than a multiple of 4, very wide, tiny: every way H + 2 * pad can miss
# the multiple of 4 the network needs, and pads larger than the image (clipped).
AWKWARD_SIZES = [(41, 53), (37, 23), (29, 30), (13, 5), (1, 40), (3, 97), (2, 2), (48, 48)]


@pytest.mark.slow
@pytest.mark.parametrize("pad", [0, 5, 8])
@pytest.mark.parametrize("bucket", [4, 64])
def test_engine_is_the_reference_forward(pad, bucket):
    """What stylize.py writes is what training and evaluate optimise and score: the engine
    (any bucket size, mixed sizes in one batch) equals stylize_padded to float rounding. A
    different padding or norm statistics inside the network differs by 3-30/255."""
    model = make_test_model()
    stylizer = Stylizer(model, pad=pad, bucket=bucket, batch_size=8)
    images = [natural_image(h, w, seed=h + w) for h, w in AWKWARD_SIZES]
    results = stylizer.stylize_batch(images)
    for image, result in zip(images, results, strict=True):
        expected = _reference(model, jnp.asarray(image[None], jnp.float32), pad)[0]
        difference = np.abs(result.astype(int) - image_io.to_uint8(np.asarray(expected)))
        assert difference.max() <= 1, (image.shape, difference.max())
        raw = np.abs(stylizer.stylize_float(image) - np.asarray(expected)).max()
        assert raw < 0.01, (image.shape, raw)  # float32 rounding of a 0..255 output


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


def test_unknown_tile_statistics_mode_is_refused():
    with pytest.raises(ValueError, match="tile_statistics"):
        Stylizer(make_test_model(), tile_statistics="shrunk")
