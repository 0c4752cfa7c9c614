"""Tiled stylization (`fnst_jax.stylize.tiling`): placement, blending weights, and how close
tiles normalised with the whole image's statistics come to an untiled run."""

from __future__ import annotations

import numpy as np
import pytest
from stylize_helpers import make_test_model, natural_image

from fnst_jax.image_io import to_uint8
from fnst_jax.stylize import Stylizer, tiling

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.mark.parametrize("length, tile, overlap", [(64, 64, 16), (71, 32, 12), (200, 64, 24)])
def test_tiles_cover_everything_on_the_stride_grid(length, tile, overlap):
    starts = tiling.tile_starts(length, tile, overlap, multiple=4)
    assert starts[0] == 0 and starts[-1] + tile >= length
    for a, b in zip(starts, starts[1:], strict=False):
        assert b - a <= tile - overlap  # neighbours overlap by at least `overlap`
    if length % 4 == 0:
        assert all(start % 4 == 0 for start in starts)


def test_edge_ramp_feathers_interior_edges_only():
    inner = tiling.edge_ramp(32, 16, ramp_start=True, ramp_end=True)
    assert inner[0] < 1e-3 and inner[-1] < 1e-3 and inner[16] == 1.0 and inner.min() > 0
    assert np.all(np.diff(inner[:16]) >= 0)
    border = tiling.edge_ramp(32, 16, ramp_start=False, ramp_end=False)
    assert np.all(border == 1.0)


def test_tiles_blend_exactly_with_an_identity_network():
    """Tile placement and feathered weights, checked exactly: identity in, identity out."""
    stylizer = Stylizer(make_test_model(), pad=8, max_pixels=32 * 32, tile=32, overlap=12)
    stylizer.run_network = lambda batch, valid=None, statistics=None: batch.astype(np.float32)
    image = natural_image(71, 50)
    assert stylizer.needs_tiling(71, 50)
    np.testing.assert_allclose(stylizer.stylize_float(image), image, atol=1e-3)


def uint8_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(to_uint8(a).astype(int) - to_uint8(b).astype(int))


def test_tiled_close_to_untiled():
    """Tiles normalised with statistics of a shrunk copy of the whole image, on its stride
    grid, against the untiled result. README's figures are for the trained model on a photo
    in 512-px tiles: mean |diff| 4.0/255, p99 14, max 45. This case is harsher by design: a
    random net whose outputs span 0..255, and a 96-px image in 64-px tiles, so every pixel
    is near a tile edge and the statistics pass runs at ~0.55x; it measures mean 8.8, max 63.
    The bounds (mean < 11, max < 90) leave margin for rounding differences across
    platforms; broken blending (hard seams, misplaced or off-grid tiles) gives far more."""
    model = make_test_model()
    image = natural_image(96, 96, seed=3)
    whole = Stylizer(model, pad=8, max_pixels=1 << 20).stylize_float(image)
    tiled_stylizer = Stylizer(model, pad=8, max_pixels=64 * 64, tile=64, overlap=24)
    tiled = tiled_stylizer.stylize_float(image)
    assert tiled_stylizer.compiled_shapes == {(1, 64, 64, 3)}  # the stats pass included
    difference = uint8_difference(whole, tiled)
    assert difference.mean() < 11, difference.mean()
    assert difference.max() < 90, difference.max()


def test_tiles_use_the_given_whole_image_statistics():
    """With the exact whole-image statistics, tiles differ from the untiled result only
    within the network's reach of their edges: measured mean |diff| 3.9/255 here, against
    7.4 when each tile uses its own statistics and ~10 off the stride grid."""
    model = make_test_model()
    image = natural_image(96, 96, seed=3)
    untiled = Stylizer(model, pad=8, max_pixels=1 << 20)
    whole = untiled.stylize_float(image)
    exact = untiled.image_statistics(image)  # fits max_pixels: measured at full size
    assert [s.shape for s in exact][:2] == [(2, 1, 1, 1, 32), (2, 1, 1, 1, 64)]
    tiled_stylizer = Stylizer(model, pad=8, max_pixels=64 * 64, tile=64, overlap=24)
    tiled_stylizer.image_statistics = lambda image: exact
    difference = uint8_difference(whole, tiled_stylizer.stylize_float(image))
    assert difference.mean() < 5.5, difference.mean()
