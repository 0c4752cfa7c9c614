// The stroke scale on this device, as fnst_jax.stroke computes it for stylize.py and the
// service: the network runs at the output size / S, and its result is enlarged back to the
// output size (pixels.js's `upsamplePixels`). "auto": S = the longest side / the model's
// native size (the ONNX file's `native_size` property), so the strokes are in proportion to
// the photo, and at least 1 (a photo smaller than the native size runs at its own size); a
// model without a native size runs at S = 1, the output size. Below the output size the
// network paints once more, over its result enlarged to twice the working size (at most the
// output size): the detail pass (`detailSize`).

import { roundHalfEven } from "./pixels.js";

export const AUTO = "auto";
const MIN_WORKING_SIDE = 16; // px: stroke.MIN_WORKING_SIDE
const MAX_UPSCALE = 8; // stroke.MAX_UPSCALE: a working image at most 8x the output's side
const DETAIL_FACTOR = 2; // stroke.DETAIL_FACTOR: the detail pass at twice the working size

/** The select's value -> S, or null for "auto"; throws for anything else. */
export function parseScale(text) {
  if (text == null || String(text).trim().toLowerCase() === AUTO) return null;
  const scale = Number(text);
  if (!Number.isFinite(scale) || scale <= 0) {
    throw new Error(`stroke scale: expected 'auto' or a positive number, not '${text}'`);
  }
  return scale;
}

/** S for an output of width x height (stroke.Stroke.scale_for); scale null: auto. */
export function scaleFor(width, height, scale, native) {
  if (scale != null) return scale;
  if (native == null) return 1;
  return Math.max(1, Math.max(width, height) / native);
}

/**
 * [width, height] the network runs at for an output of width x height
 * (stroke.Stroke.working_size, Python's round included); throws an Error when the working
 * image would be too small to paint.
 */
export function workingSize(width, height, scale, native) {
  let factor = scaleFor(width, height, scale, native);
  if (factor === 1) return [width, height];
  factor = Math.max(factor, 1 / MAX_UPSCALE);
  const size = [
    Math.max(1, roundHalfEven(width / factor)),
    Math.max(1, roundHalfEven(height / factor)),
  ];
  if (Math.min(...size) < Math.min(MIN_WORKING_SIDE, width, height)) {
    throw new Error(
      `stroke size ${Number(factor.toPrecision(6))} would run the network on a ` +
        `${size[0]}x${size[1]} image for a ${width}x${height} output (the smallest is ` +
        `${MIN_WORKING_SIDE} px a side): choose a smaller stroke size`,
    );
  }
  return size;
}

/**
 * [width, height] of the detail pass for an output of width x height whose network ran at
 * `working` (stroke.Stroke.detail_size), or null when there is none: the network at the
 * output size or above.
 */
export function detailSize(width, height, working) {
  const longest = Math.max(width, height);
  if (Math.max(...working) >= longest) return null;
  const factor = Math.min(1, (DETAIL_FACTOR * Math.max(...working)) / longest);
  return [
    Math.max(1, roundHalfEven(width * factor)),
    Math.max(1, roundHalfEven(height * factor)),
  ];
}
