"""Tiled stylization: images above `Stylizer.max_pixels`, never whole through the network.

The image's network input (`arrays.network_input`) is cut into tiles whose interiors
partition it (`TileGrid`). Each tile's array adds `HALO` px of real context on every side
(the network's receptive field), and the tile's box tells the network where the image ends,
so every layer reflects there as in an untiled run. A tile's interior is then exactly the
untiled output, given the instance-norm statistics the tile is normalised with; the
interiors are written side by side, with no blending.

The statistics are the whole image's (a tile's own would shift its tone):
  * "exact" (`exact_statistics`, the default): each norm layer's input depends on the
    statistics of every norm layer before it, so they are computed in order, one tiled pass
    per norm layer (15), each pass running only up to that layer (XLA drops the rest) with
    the layers before it normalised with the statistics already found; per-tile counts,
    means and squared deviations are combined in float64. Then one pass writes the output:
    the untiled result up to float rounding. Cost: about 7.5x one untiled pass of compute
    (the passes stop at their layer; the residual blocks hold most of the work) and one
    compiled program per pass.
  * "approximate" (`approximate_statistics`): measured once, on a copy shrunk so that its
    network input fits `max_pixels`: one network call, then the output pass. Features of a
    shrunk image have somewhat other statistics, so the tone differs a little from an
    untiled run (docs/experiments/tiling.md, benchmarks/tiling_error.py).

Memory: the uint8 network input and float32 output of the image's size, and one batch of
tile arrays through the network; never the whole image.

The functions take the engine that runs the network (`TilingEngine`: the JAX
`engine.Stylizer`, or `onnx_engine.OnnxStylizer`, which runs the tiling functions an
exported ONNX file carries); each engine calls `stylize_tiled` for every image above
`max_pixels`. This module is numpy only: it imports no JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from fnst_jax import image_io
from fnst_jax.stylize.arrays import SIZE_MULTIPLE, network_input, round_up

# A norm layer's float32 (mean, variance), each (N, 1, 1, C).
Moments = tuple[np.ndarray, np.ndarray]
# Per norm layer (in call order), the moments every image of a call is normalised with.
NormStatistics = list[Moments]
# Per tile, one norm layer's input over its interior: float32 (count, mean, squared
# deviations from that mean), shaped (N, 1, 1, 1), (N, 1, 1, C), (N, 1, 1, C).
Summary = tuple[np.ndarray, np.ndarray, np.ndarray]

# How far an output pixel sees into the input (TransformerNet's receptive-field radius at
# full resolution): 4 (9x9 input conv) + 1 + 2 (the stride-2 convs) + 40 (ten 3x3 residual
# convs at 1/4 resolution) + 2 + 1 (the upsampling convs) + 4 (9x9 output conv) = 54 px.
# A tile carries this much context on every side, on the stride grid with room to spare.
HALO = 64
# Norm layers of a TransformerNet: 3 (encoder) + 2 x 5 (residual blocks) + 2 (decoder).
NUM_NORM_LAYERS = 15


class TilingEngine(Protocol):
    """What tiling needs of the engine that runs the network."""

    pad: int  # the train pad around the image
    tile: int  # the side of a tile's interior (a multiple of 4)
    max_pixels: int
    tile_statistics: str  # "exact" or "approximate"

    def batch_limit(self, pixels_per_image: int) -> int:
        """Tile arrays per network call."""
        ...

    def tile_outputs(
        self, tiles: np.ndarray, boxes: np.ndarray, statistics: NormStatistics
    ) -> np.ndarray:
        """uint8 (N, H, W, 3) tile arrays and their (N, 4) int32 boxes -> float32
        (N, H, W, 3): the box form of the network, every norm given `statistics`."""
        ...

    def tile_summaries(
        self,
        tiles: np.ndarray,
        boxes: np.ndarray,
        interiors: np.ndarray,
        layer: int,
        given: NormStatistics,
    ) -> Summary:
        """Per tile, norm layer `layer`'s input summarised over its (N, 4) interior, the
        layers before it normalised with `given`."""
        ...

    def norm_statistics(self, image: np.ndarray, pad: int) -> NormStatistics:
        """The (1, 1, 1, C) moments of every norm layer of an untiled run of the uint8
        image with a `pad` border."""
        ...


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: its array (interior plus halo), where the image is in it, its interior."""

    top: int  # of the interior, in the network input
    left: int
    array: np.ndarray  # (tile_h + 2 * HALO, tile_w + 2 * HALO, 3) uint8
    box: np.ndarray  # (4,) int32: where the network input is in `array`
    interior: np.ndarray  # (4,) int32: the rows/columns of `array` this tile computes


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Interiors of at most `tile` px (multiples of 4) that partition a network input of
    height x width (multiples of 4); every tile array has the same shape (one compiled
    program), the last row/column of tiles computing a shorter interior."""

    height: int
    width: int
    tile: int
    halo: int = HALO

    @property
    def tile_shape(self) -> tuple[int, int]:
        return min(self.tile, self.height), min(self.tile, self.width)

    @property
    def array_shape(self) -> tuple[int, int]:
        tile_h, tile_w = self.tile_shape
        return tile_h + 2 * self.halo, tile_w + 2 * self.halo

    def tiles(self, source: np.ndarray) -> list[Tile]:
        """Every tile of the network input `source`, cut once: each of the 16 passes over
        an image reuses them."""
        return [self.tile_at(source, y, x) for y, x in self.origins()]

    def origins(self) -> list[tuple[int, int]]:
        """(top, left) of every interior, row by row."""
        tile_h, tile_w = self.tile_shape
        return [(y, x) for y in range(0, self.height, tile_h) for x in range(0, self.width, tile_w)]

    def tile_at(self, source: np.ndarray, top: int, left: int) -> Tile:
        """The tile whose interior starts at (top, left) of the network input `source`."""
        tile_h, tile_w = self.tile_shape
        array_h, array_w = self.array_shape
        array = np.zeros((array_h, array_w, source.shape[-1]), source.dtype)
        y0, x0 = top - self.halo, left - self.halo  # the array's corner in the input
        rows = slice(max(y0, 0), min(y0 + array_h, self.height))
        cols = slice(max(x0, 0), min(x0 + array_w, self.width))
        array[rows.start - y0 : rows.stop - y0, cols.start - x0 : cols.stop - x0] = source[
            rows, cols
        ]
        box = (rows.start - y0, rows.stop - y0, cols.start - x0, cols.stop - x0)
        interior = (
            self.halo,
            self.halo + min(tile_h, self.height - top),
            self.halo,
            self.halo + min(tile_w, self.width - left),
        )
        return Tile(top, left, array, np.array(box, np.int32), np.array(interior, np.int32))


def _batches(stylizer: TilingEngine, grid: TileGrid, tiles: Sequence[Tile]) -> Iterator[list[Tile]]:
    """The tiles, as many per network call as `max_pixels` allows."""
    limit = stylizer.batch_limit(grid.array_shape[0] * grid.array_shape[1])
    for start in range(0, len(tiles), limit):
        yield list(tiles[start : start + limit])


def _stacked(tiles: Sequence[Tile], field: str) -> np.ndarray:
    """One field of a batch of tiles, stacked."""
    return np.stack([getattr(tile, field) for tile in tiles])


def _combine(summaries: list[Summary]) -> Moments:
    """Per-tile (count, mean, squared deviations) -> the (1, 1, 1, C) mean and variance of
    the union (Chan et al.'s pairwise update, in float64)."""
    counts = np.concatenate([c for c, _, _ in summaries]).astype(np.float64)
    means = np.concatenate([m for _, m, _ in summaries]).astype(np.float64)
    squares = np.concatenate([s for _, _, s in summaries]).astype(np.float64)
    total = counts.sum(axis=0, keepdims=True)
    mean = (counts * means).sum(axis=0, keepdims=True) / total
    variance = (squares + counts * np.square(means - mean)).sum(axis=0, keepdims=True) / total
    return mean.astype(np.float32), variance.astype(np.float32)


def exact_statistics(
    stylizer: TilingEngine,
    source: np.ndarray,
    grid: TileGrid,
    tiles: Sequence[Tile] | None = None,
) -> NormStatistics:
    """The moments of every norm layer over the whole network input `source`, computed
    layer by layer over the grid's tiles (see the module docstring). tiles: the grid's
    tiles of `source` when the caller has cut them already."""
    tiles = grid.tiles(source) if tiles is None else tiles
    statistics: NormStatistics = []
    for layer in range(NUM_NORM_LAYERS):
        summaries = [
            stylizer.tile_summaries(
                _stacked(batch, "array"),
                _stacked(batch, "box"),
                _stacked(batch, "interior"),
                layer,
                statistics,
            )
            for batch in _batches(stylizer, grid, tiles)
        ]
        statistics.append(_combine(summaries))
    return statistics


def shrunk_size(height: int, width: int, pad: int, max_pixels: int) -> tuple[int, int, int]:
    """(height, width, pad) of the copy approximate statistics are measured on: the largest
    scale whose network input (`arrays.network_input`: the pad, then sides rounded up to a
    multiple of 4) fits `max_pixels`. A function of the sizes alone, so every engine
    measures the same copy."""
    scale = min(1.0, (max_pixels / ((height + 2 * pad) * (width + 2 * pad))) ** 0.5)
    while True:
        small_h, small_w = max(1, round(height * scale)), max(1, round(width * scale))
        small_pad = round(pad * scale)
        rows = round_up(small_h + 2 * min(small_pad, small_h - 1), SIZE_MULTIPLE)
        cols = round_up(small_w + 2 * min(small_pad, small_w - 1), SIZE_MULTIPLE)
        if rows * cols <= max_pixels or min(small_h, small_w) == 1:
            return small_h, small_w, small_pad
        scale *= 0.97


def approximate_statistics(stylizer: TilingEngine, image: np.ndarray) -> NormStatistics:
    """The moments of every norm layer of the uint8 image (plus its `pad` border), measured
    on a copy shrunk to fit `max_pixels` (`shrunk_size`): one network call whatever the
    image size."""
    small_h, small_w, small_pad = shrunk_size(*image.shape[:2], stylizer.pad, stylizer.max_pixels)
    small = image_io.resize_rgb_alpha(image, None, (small_w, small_h))[0]
    return stylizer.norm_statistics(small, small_pad)


def image_statistics(stylizer: TilingEngine, image: np.ndarray) -> NormStatistics:
    """The whole image's statistics, by the stylizer's `tile_statistics` mode."""
    if stylizer.tile_statistics == "approximate":
        return approximate_statistics(stylizer, image)
    source, _ = network_input(image, stylizer.pad)
    return exact_statistics(stylizer, source, TileGrid(*source.shape[:2], stylizer.tile))


def stylize_tiled(
    stylizer: TilingEngine, image: np.ndarray, statistics: NormStatistics | None = None
) -> np.ndarray:
    """One uint8 (H, W, 3) image -> float32 (H, W, 3), unclamped, tile by tile, every tile
    normalised with `statistics` (default: `image_statistics`)."""
    height, width = image.shape[:2]
    source, (pad_h, pad_w) = network_input(image, stylizer.pad)
    grid = TileGrid(*source.shape[:2], stylizer.tile)
    tiles = grid.tiles(source)
    if statistics is None and stylizer.tile_statistics == "exact":
        statistics = exact_statistics(stylizer, source, grid, tiles)
    elif statistics is None:
        statistics = approximate_statistics(stylizer, image)
    output = np.empty((height, width, 3), np.float32)
    for batch in _batches(stylizer, grid, tiles):
        results = stylizer.tile_outputs(
            _stacked(batch, "array"), _stacked(batch, "box"), statistics
        )
        for tile, result in zip(batch, results, strict=True):
            top, bottom, left, right = tile.interior
            # The interior, less the train pad and rounding around the image.
            y0, y1 = max(tile.top, pad_h), min(tile.top + bottom - top, pad_h + height)
            x0, x1 = max(tile.left, pad_w), min(tile.left + right - left, pad_w + width)
            if y0 >= y1 or x0 >= x1:
                continue
            output[y0 - pad_h : y1 - pad_h, x0 - pad_w : x1 - pad_w] = result[
                top + y0 - tile.top : top + y1 - tile.top,
                left + x0 - tile.left : left + x1 - tile.left,
            ]
    return output
