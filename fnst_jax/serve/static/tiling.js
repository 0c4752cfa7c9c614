// Tiled stylization in the browser: large photos never go through the network whole.
//
// The same procedure as fnst_jax/stylize/tiling.py (read its docstring first), ported so a
// tiled photo comes out as `stylize.py` writes it, up to float rounding:
//   * `networkInput`: the photo reflect-padded by the model's training pad (clipped to the
//     side minus one), then at the bottom/right up to a multiple of 4 (arrays.network_input).
//   * `TileGrid`: interiors of at most `tile` px that partition the network input; each
//     tile's array adds HALO px of real context around its interior (zeros beyond the
//     image), and its box says where the image is inside it, so every layer reflects there.
//   * `exactStatistics`: each instance norm layer's moments over the whole network input,
//     layer by layer (15 passes, each stopping at its layer), every earlier layer normalised
//     with the moments already found; per-tile counts, means and squared deviations are
//     combined in float64 (Chan et al.'s pairwise update), then rounded to float32.
//   * `stylizeTiled`: one more pass, every tile normalised with those moments; the tiles'
//     interiors, less the pad, are the output.
// The network in its box form is the ONNX file's `tile_forward` function (onnx_file.js
// makes each pass's model of it); `engine.runTile` runs one.
//
// Memory: the uint8 network input, one tile array through the network at a time, and the
// output; never the whole photo's activations.

import { NUM_NORM_LAYERS } from "./onnx_file.js";

// tiling.HALO: the network's receptive-field radius (54 px), on the stride grid.
export const HALO = 64;
export const SIZE_MULTIPLE = 4;

const roundUp = (value, multiple) => Math.ceil(value / multiple) * multiple;

/** The position an index i of a reflect-padded axis of `size` reads (numpy's "reflect"). */
function reflectIndex(i, size) {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  const folded = ((i % period) + period) % period;
  return folded < size ? folded : period - folded;
}

/**
 * The network input of an RGB image (Uint8Array, height*width*3):
 * {data, rows, cols, padTop, padLeft}, laid out as fnst_jax.stylize.arrays.network_input.
 */
export function networkInput(rgb, height, width, pad) {
  const padTop = Math.min(pad, height - 1);
  const padLeft = Math.min(pad, width - 1);
  const rows = roundUp(height + 2 * padTop, SIZE_MULTIPLE);
  const cols = roundUp(width + 2 * padLeft, SIZE_MULTIPLE);
  // The rounding rows reflect the padded image (not the photo): index into it, then into
  // the photo, as numpy's two pads do.
  const paddedRows = height + 2 * padTop;
  const paddedCols = width + 2 * padLeft;
  const sourceCol = new Int32Array(cols);
  for (let x = 0; x < cols; x++) {
    sourceCol[x] = reflectIndex(reflectIndex(x, paddedCols) - padLeft, width);
  }
  const data = new Uint8Array(rows * cols * 3);
  for (let y = 0; y < rows; y++) {
    const sourceRow = reflectIndex(reflectIndex(y, paddedRows) - padTop, height);
    const from = sourceRow * width * 3;
    let to = y * cols * 3;
    for (let x = 0; x < cols; x++, to += 3) {
      const at = from + sourceCol[x] * 3;
      data[to] = rgb[at];
      data[to + 1] = rgb[at + 1];
      data[to + 2] = rgb[at + 2];
    }
  }
  return { data, rows, cols, padTop, padLeft };
}

/** Interiors of at most `tile` px partitioning a rows x cols network input (TileGrid). */
export class TileGrid {
  constructor(rows, cols, tile, halo = HALO) {
    this.rows = rows;
    this.cols = cols;
    this.tileRows = Math.min(tile, rows);
    this.tileCols = Math.min(tile, cols);
    this.halo = halo;
    this.arrayRows = this.tileRows + 2 * halo;
    this.arrayCols = this.tileCols + 2 * halo;
  }

  /** [top, left] of every interior, row by row. */
  origins() {
    const origins = [];
    for (let y = 0; y < this.rows; y += this.tileRows) {
      for (let x = 0; x < this.cols; x += this.tileCols) origins.push([y, x]);
    }
    return origins;
  }

  /**
   * The tile whose interior starts at (top, left): {top, left, array (uint8, arrayRows *
   * arrayCols * 3), box, interior ([top, bottom, left, right] in the array)}.
   */
  tileAt(source, top, left) {
    const { arrayRows, arrayCols, halo } = this;
    const array = new Uint8Array(arrayRows * arrayCols * 3);
    const y0 = top - halo;
    const x0 = left - halo;
    const rowStart = Math.max(y0, 0);
    const rowStop = Math.min(y0 + arrayRows, this.rows);
    const colStart = Math.max(x0, 0);
    const colStop = Math.min(x0 + arrayCols, this.cols);
    const rowBytes = (colStop - colStart) * 3;
    for (let y = rowStart; y < rowStop; y++) {
      const from = (y * this.cols + colStart) * 3;
      array.set(source.subarray(from, from + rowBytes), ((y - y0) * arrayCols + colStart - x0) * 3);
    }
    const box = [rowStart - y0, rowStop - y0, colStart - x0, colStop - x0];
    const interior = [
      halo,
      halo + Math.min(this.tileRows, this.rows - top),
      halo,
      halo + Math.min(this.tileCols, this.cols - left),
    ];
    return { top, left, array, box, interior };
  }

  tiles(source) {
    return this.origins().map(([top, left]) => this.tileAt(source, top, left));
  }
}

/**
 * Per-tile summaries [{count, mean (Float32Array C), squares (Float32Array C)}] -> the
 * float32 {mean, variance} of their union, combined in float64 (tiling._combine).
 */
export function combine(summaries) {
  const channels = summaries[0].mean.length;
  const total = summaries.reduce((sum, s) => sum + s.count, 0);
  const mean = new Float64Array(channels);
  for (const s of summaries) {
    for (let c = 0; c < channels; c++) mean[c] += s.count * s.mean[c];
  }
  for (let c = 0; c < channels; c++) mean[c] /= total;
  const variance = new Float64Array(channels);
  for (const s of summaries) {
    for (let c = 0; c < channels; c++) {
      const offset = s.mean[c] - mean[c];
      variance[c] += s.squares[c] + s.count * offset * offset;
    }
  }
  for (let c = 0; c < channels; c++) variance[c] /= total;
  return { mean: Float32Array.from(mean), variance: Float32Array.from(variance) };
}

/**
 * Every norm layer's moments over the whole network input, layer by layer. `tiles`:
 * {shape: [array rows, array cols], list: the grid's tiles}. engine.summaries(layer,
 * given, tiles, onTile) runs one pass: a summary per tile (device.js).
 */
export async function exactStatistics(engine, tiles, onProgress) {
  const statistics = [];
  for (let layer = 0; layer < NUM_NORM_LAYERS; layer++) {
    const summaries = await engine.summaries(layer, statistics, tiles, (index) =>
      onProgress?.({
        stage: "statistics",
        layer,
        layers: NUM_NORM_LAYERS,
        tile: index,
        tiles: tiles.list.length,
      }),
    );
    statistics.push(combine(summaries));
  }
  return statistics;
}

/**
 * An RGB photo (Uint8Array, height*width*3) -> its stylized float32 output (the same
 * layout, 0..255 scale, unrounded), tile by tile with exact statistics.
 * engine.tileOutputs(statistics, tiles, onResult) runs the output pass (device.js).
 */
export async function stylizeTiled(engine, rgb, height, width, { pad, tile, onProgress }) {
  const source = networkInput(rgb, height, width, pad);
  const grid = new TileGrid(source.rows, source.cols, tile);
  const tiles = grid.tiles(source.data);
  const shape = [grid.arrayRows, grid.arrayCols];
  const statistics = await exactStatistics(engine, { shape, list: tiles }, onProgress);
  const output = new Float32Array(height * width * 3);
  const { padTop, padLeft } = source;
  await engine.tileOutputs(statistics, { shape, list: tiles }, (index, result) => {
    onProgress?.({ stage: "output", tile: index, tiles: tiles.length });
    const t = tiles[index];
    const [top, bottom, left, right] = t.interior;
    // The interior, less the train pad and the rounding around the photo.
    const y0 = Math.max(t.top, padTop);
    const y1 = Math.min(t.top + bottom - top, padTop + height);
    const x0 = Math.max(t.left, padLeft);
    const x1 = Math.min(t.left + right - left, padLeft + width);
    if (y0 >= y1 || x0 >= x1) return;
    const rowValues = (x1 - x0) * 3;
    for (let y = y0; y < y1; y++) {
      const from = ((top + y - t.top) * grid.arrayCols + left + x0 - t.left) * 3;
      const to = ((y - padTop) * width + x0 - padLeft) * 3;
      output.set(result.subarray(from, from + rowValues), to);
    }
  });
  return output;
}
