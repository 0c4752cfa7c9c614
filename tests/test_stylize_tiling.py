"""Tiled stylization (`fnst_jax.stylize.tiling`): the tile grid, placement, and how close the
exact and approximate whole-image statistics come to an untiled run."""

from __future__ import annotations

import numpy as np
import pytest
from stylize_helpers import make_test_model, natural_image

from fnst_jax.image_io import to_uint8
from fnst_jax.stylize import Stylizer, tiling
from fnst_jax.stylize.arrays import network_input

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.mark.parametrize("height, width, tile", [(64, 64, 64), (72, 100, 32), (200, 4, 48)])
def test_tile_interiors_partition_the_network_input(height, width, tile):
    grid = tiling.TileGrid(height, width, tile)
    source = np.arange(height * width, dtype=np.int64).reshape(height, width, 1)
    covered = np.zeros((height, width), int)
    for y, x in grid.origins():
        assert y % 4 == 0 and x % 4 == 0  # on the network's stride grid
        t = grid.tile_at(source, y, x)
        assert t.array.shape[:2] == grid.array_shape  # one compiled shape for all tiles
        top, bottom, left, right = t.interior
        covered[y : y + bottom - top, x : x + right - left] += 1
        # The interior holds the input at its place; the box is where the input is.
        np.testing.assert_array_equal(
            t.array[top:bottom, left:right], source[y : y + bottom - top, x : x + right - left]
        )
        box_top, box_bottom, box_left, box_right = t.box
        assert box_top <= top and bottom <= box_bottom and box_left <= left and right <= box_right
        assert box_bottom - box_top == min(height, y + bottom - top + tiling.HALO) - max(
            0, y - tiling.HALO
        )
    assert np.all(covered == 1)


def test_tiles_are_placed_exactly_with_an_identity_network():
    """Tile placement and cropping, checked exactly: identity in, identity out."""
    stylizer = Stylizer(make_test_model(), pad=8, max_pixels=32 * 32, tile=32)

    def identity(tiles, boxes, statistics):
        return tiles.astype(np.float32)

    stylizer.tile_outputs = identity
    image = natural_image(71, 50)
    assert stylizer.needs_tiling(71, 50)
    statistics = []  # not used by the identity network
    result = tiling.stylize_tiled(stylizer, image, statistics)
    np.testing.assert_array_equal(result, image)


def uint8_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(to_uint8(a).astype(int) - to_uint8(b).astype(int))


@pytest.fixture(scope="module")
def untiled_result():
    model = make_test_model()
    image = natural_image(90, 70, seed=3)
    return model, image, Stylizer(model, pad=8, max_pixels=1 << 20).stylize_float(image)


@pytest.mark.slow
def test_exact_statistics_give_the_untiled_statistics_and_result(untiled_result):
    """Exact mode: the statistics gathered tile by tile are the whole image's, and every tile
    sees its receptive field and them, so the tiled result is the untiled one up to float32
    rounding (the bound: 2/255 after rounding; measured here: 0 levels, raw max ~2e-4)."""
    model, image, untiled = untiled_result
    measured = Stylizer(model, pad=8).norm_statistics(image, 8)
    source, _ = network_input(image, 8)
    stylizer = Stylizer(model, pad=8, max_pixels=40 * 40, tile=40)
    exact = tiling.exact_statistics(stylizer, source, tiling.TileGrid(*source.shape[:2], 40))
    assert len(exact) == len(measured) == tiling.NUM_NORM_LAYERS
    for (mean, var), (true_mean, true_var) in zip(exact, measured, strict=True):
        np.testing.assert_allclose(mean, true_mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(var, true_var, rtol=1e-4, atol=1e-4)

    tiled = stylizer.stylize_float(image)
    assert stylizer.needs_tiling(*image.shape[:2])
    assert len(stylizer.compiled_shapes) == 1  # every tile runs in one array shape
    assert uint8_difference(untiled, tiled).max() <= 1
    assert np.abs(tiled - untiled).max() < 0.01


@pytest.mark.parametrize(
    "height, width, pad, max_pixels",
    [(900, 700, 40, 4096), (90, 70, 8, 40 * 40), (3000, 5, 40, 4096), (50, 50, 8, 1 << 20)],
)
def test_the_shrunk_copy_fits_max_pixels(height, width, pad, max_pixels):
    """Approximate statistics are measured on the largest copy whose network input fits
    max_pixels: a function of the sizes alone, so the JAX and ONNX engines shrink alike."""
    small_h, small_w, small_pad = tiling.shrunk_size(height, width, pad, max_pixels)
    source, _ = network_input(np.zeros((small_h, small_w, 3), np.uint8), small_pad)
    pixels = source.shape[0] * source.shape[1]
    if (small_h, small_w) == (height, width):
        assert pixels <= max_pixels
    elif min(small_h, small_w) > 1:  # shrunk in 3% steps: fits, and uses the budget
        assert max_pixels / 2 < pixels <= max_pixels
        assert small_w / small_h == pytest.approx(width / height, rel=0.1)
    else:  # a side of one pixel cannot shrink further
        assert small_w == 1 and small_h < height


def test_approximate_statistics_stay_close(untiled_result):
    """Approximate mode: statistics of a copy shrunk to max_pixels. On this random net at
    40x40 (a 0.45x copy) it measures mean 8/255; docs/experiments/tiling.md gives the trained
    model's figures on real photos. The bound leaves room for platform rounding; per-tile
    statistics or misplaced tiles are far off (mean > 20)."""
    model, image, untiled = untiled_result
    stylizer = Stylizer(model, pad=8, max_pixels=40 * 40, tile=40, tile_statistics="approximate")
    difference = uint8_difference(untiled, stylizer.stylize_float(image))
    assert difference.mean() < 12, difference.mean()
