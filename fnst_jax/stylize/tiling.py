"""Tiled stylization: images above `Stylizer.max_pixels`, never whole through the network.

`stylize_tiled` cuts the image into overlapping tiles (each tile sees real neighbouring
pixels, reflection only at the true image border), stylizes a batch of tiles at a time, and
blends them into float32 output and weight arrays of the image's size. The blending weight
(`edge_ramp`) falls smoothly to zero a little before each interior tile edge, so the tile
borders, where the network sees an artificial edge, never show.

Two things keep the tiles in tone with each other and close to an untiled run:
  * statistics: every tile is normalised with the whole image's instance-norm statistics
    (`image_statistics`, measured once on a copy shrunk to fit `max_pixels`), not its own,
    which would shift the tone tile by tile;
  * the stride grid: the network downsamples by 4 (two stride-2 convs) and is not
    shift-invariant at finer offsets, so tiles start at multiples of 4 of the whole padded
    image (`tile_starts`), as `transformer_net.stylize_padded` would see them.
How close: README ("Stylizing images and videos"), measured with benchmarks/tiling_error.py.

Memory: the padded uint8 input, the float32 output and weight arrays of the image's size,
and one batch of tiles.

The functions take the `engine.Stylizer` that runs the network (its `run_network`,
`norm_statistics`, `batch_limit`, `bucket_shape` and tile settings); the engine calls
`stylize_tiled` for every image above `max_pixels`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fnst_jax.stylize.arrays import reflect_pad_numpy, resize
from fnst_jax.transformer_net import SIZE_MULTIPLE

if TYPE_CHECKING:
    from fnst_jax.stylize.engine import NormStatistics, Stylizer


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with >= `overlap` overlap,
    all multiples of `multiple` when `length` and `tile` are."""
    if length <= tile:
        return [0]
    step = max((tile - overlap) // multiple * multiple, multiple)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def edge_ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weight of a tile: 1 inside, smoothly 0 near interior edges.

    The first quarter of the overlap next to an interior edge gets (almost) no weight, the
    next half rises with a smoothstep: a neighbouring tile covers that band at full weight,
    so every pixel keeps a positive total weight while no tile's edge shows.
    """
    weight = np.ones(length, np.float32)
    if overlap <= 0:
        return weight
    margin = overlap // 4
    rise = max(overlap - 2 * margin, 1)
    distance = np.arange(length, dtype=np.float32) + 0.5
    ramp = np.clip((distance - margin) / rise, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    ramp = np.maximum(ramp, 1e-4)  # never exactly 0: a lone tile still defines the pixel
    if ramp_start:
        weight = np.minimum(weight, ramp)
    if ramp_end:
        weight = np.minimum(weight, ramp[::-1])
    return weight


def image_statistics(stylizer: Stylizer, image: np.ndarray) -> NormStatistics:
    """Per norm layer, the (2, 1, 1, 1, C) mean and variance of the whole uint8 (H, W, 3)
    image (plus its `pad` border), measured on a copy shrunk to fit `max_pixels`.

    An approximation whatever the image size costs at most one network call of
    `max_pixels`: a shrunk image's features have somewhat other statistics (on a random net,
    variances ~10-30% lower at 0.65x), but these belong together, and tiles
    normalised with them come out much closer to the untiled result than with their own
    (README's figures). Exact statistics would take one full pass over the tiles per norm
    layer (each layer's depends on all before it); mixing exact statistics of early layers
    with shrunk ones of later layers is worse than either.
    """
    height, width = image.shape[:2]
    pad = stylizer.pad
    scale = min(1.0, (stylizer.max_pixels / ((height + 2 * pad) * (width + 2 * pad))) ** 0.5)
    # The largest scale whose bucket fits (bucket rounding adds a little; one bucket is the
    # least there is).
    budget = max(stylizer.max_pixels, stylizer.bucket * stylizer.bucket)
    while True:
        small_h, small_w = max(1, round(height * scale)), max(1, round(width * scale))
        small_pad = round(pad * scale)
        bucket_h, bucket_w = stylizer.bucket_shape(small_h, small_w, small_pad)
        if bucket_h * bucket_w <= budget or min(small_h, small_w) == 1:
            break
        scale *= 0.97
    small = resize(image, None, (small_w, small_h))[0]
    return stylizer.norm_statistics(small, small_pad)


def pad_for_tiles(image: np.ndarray, pad: int) -> np.ndarray:
    """The image reflect-padded by `pad`, then at the bottom/right to a multiple of 4, as the
    network itself pads: the array whose stride grid every tile sits on."""
    padded = reflect_pad_numpy(image, pad, pad, pad, pad)
    return reflect_pad_numpy(
        padded, 0, -padded.shape[0] % SIZE_MULTIPLE, 0, -padded.shape[1] % SIZE_MULTIPLE
    )


def stylize_tiled(stylizer: Stylizer, image: np.ndarray) -> np.ndarray:
    """One large uint8 (H, W, 3) image -> float32 (H, W, 3), unclamped, in overlapping tiles
    of `stylizer.tile` px (multiples of 4, starting at multiples of 4 of the padded image)."""
    statistics = stylizer.image_statistics(image)
    height, width = image.shape[:2]
    pad = stylizer.pad
    padded = pad_for_tiles(image, pad)
    padded_h, padded_w = padded.shape[:2]
    tile_h, tile_w = min(stylizer.tile, padded_h), min(stylizer.tile, padded_w)
    overlap = stylizer.overlap
    output = np.zeros((height, width, 3), np.float32)
    weight_sum = np.zeros((height, width), np.float32)
    corners = [
        (y, x)
        for y in tile_starts(padded_h, tile_h, overlap, SIZE_MULTIPLE)
        for x in tile_starts(padded_w, tile_w, overlap, SIZE_MULTIPLE)
    ]
    limit = stylizer.batch_limit(tile_h * tile_w)
    for start in range(0, len(corners), limit):
        group = corners[start : start + limit]
        tiles = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in group])
        results = stylizer.run_network(tiles, statistics=statistics)
        for (y, x), result in zip(group, results, strict=True):
            weight_y = edge_ramp(tile_h, overlap, y > 0, y + tile_h < padded_h)
            weight_x = edge_ramp(tile_w, overlap, x > 0, x + tile_w < padded_w)
            # The part of the tile inside the image (the padding is cropped off).
            y0, y1 = max(y, pad), min(y + tile_h, pad + height)
            x0, x1 = max(x, pad), min(x + tile_w, pad + width)
            weight = np.outer(weight_y[y0 - y : y1 - y], weight_x[x0 - x : x1 - x])
            region = (slice(y0 - pad, y1 - pad), slice(x0 - pad, x1 - pad))
            output[region] += result[y0 - y : y1 - y, x0 - x : x1 - x] * weight[..., None]
            weight_sum[region] += weight
    output /= weight_sum[..., None]
    return output
