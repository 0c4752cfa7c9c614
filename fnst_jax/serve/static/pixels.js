// Photos to pixels and pixels to files in the browser, as fnst_jax reads and writes them:
//   * `decodePhoto`: a File/Blob -> an ImageBitmap with the EXIF orientation applied and no
//     colour-space conversion (stylize.py reads the stored values too);
//   * `targetSize`: stylize.py's --size (longest side; Python's round, half to even);
//   * `photoPixels`: a bitmap, resized with the browser's high-quality resampler when
//     asked (stylize.py uses Lanczos: resized photos differ slightly, same-size ones do
//     not), -> RGB (and alpha) bytes;
//   * `finishPixels`: the network's float output -> RGBA bytes: colours kept on request
//     (image_io.transfer_luminance, BT.601 YCbCr), rounded half to even and clipped
//     (image_io.to_uint8), the photo's alpha put back;
//   * `upsamplePixels`: a result stylized below the output size (the stroke scale,
//     stroke.js) enlarged to it with the browser's high-quality resampler, where
//     stylize.py uses bicubic;
//   * `encodePixels`: RGBA -> a PNG, JPEG or WebP Blob.

export const OUTPUT_TYPES = { jpg: "image/jpeg", png: "image/png", webp: "image/webp" };
const JPEG_QUALITY = 0.95; // the service's default quality (95)

/** Python's round(): halves to the even neighbour. */
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** (width, height) after a longest side of `size` px (null: as is); stylize.inputs.target_size. */
export function targetSize(width, height, size) {
  if (!size) return [width, height];
  const factor = size / Math.max(width, height);
  return [Math.max(1, roundHalfEven(width * factor)), Math.max(1, roundHalfEven(height * factor))];
}

/** A photo file -> ImageBitmap; throws an Error saying the file cannot be read. */
export async function decodePhoto(blob) {
  const options = {
    imageOrientation: "from-image",
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  };
  try {
    return await createImageBitmap(blob, options);
  } catch (error) {
    // A browser that knows none of these options refuses them (TypeError): its defaults
    // then, which orient and convert as most browsers do.
    if (error instanceof TypeError) {
      try {
        return await createImageBitmap(blob);
      } catch (_) {
        // not an image after all: the first error says more
      }
    }
    throw new Error(`this browser cannot read the file as an image (${error.message})`);
  }
}

function canvas(width, height) {
  const surface = document.createElement("canvas");
  surface.width = width;
  surface.height = height;
  return surface;
}

function context2d(surface) {
  return surface.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
}

/**
 * RGB bytes (height*width*3) and alpha (height*width, or null when opaque) of `source`
 * (an ImageBitmap, video or canvas) drawn at width x height.
 */
export async function photoPixels(source, width, height) {
  let drawn = source;
  const sourceWidth = source.videoWidth || source.width;
  const sourceHeight = source.videoHeight || source.height;
  if (source instanceof ImageBitmap && (sourceWidth !== width || sourceHeight !== height)) {
    drawn = await createImageBitmap(source, {
      resizeWidth: width,
      resizeHeight: height,
      resizeQuality: "high",
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
  }
  const surface = canvas(width, height);
  const context = context2d(surface);
  context.drawImage(drawn, 0, 0, width, height);
  if (drawn !== source) drawn.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const count = width * height;
  const rgb = new Uint8Array(count * 3);
  let alpha = null;
  for (let i = 0; i < count; i++) {
    rgb[3 * i] = rgba[4 * i];
    rgb[3 * i + 1] = rgba[4 * i + 1];
    rgb[3 * i + 2] = rgba[4 * i + 2];
    if (rgba[4 * i + 3] !== 255 && !alpha) alpha = new Uint8Array(count).fill(255, 0, i);
    if (alpha) alpha[i] = rgba[4 * i + 3];
  }
  return { rgb, alpha, width, height };
}

// BT.601 full-range RGB -> YCbCr without the chroma offset (it cancels), and back, in
// float32 as image_io computes them.
const RGB_TO_YCBCR = [
  [0.299, 0.587, 0.114],
  [-0.168736, -0.331264, 0.5],
  [0.5, -0.418688, -0.081312],
].map((row) => row.map(Math.fround));
const YCBCR_TO_RGB = invert3(RGB_TO_YCBCR).map((row) => row.map(Math.fround));

function invert3(m) {
  const [[a, b, c], [d, e, f], [g, h, i]] = m;
  const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
  return [
    [(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det],
  ];
}

/** numpy's rint then clip to 0..255. */
function toLevel(value) {
  if (!(value > 0)) return 0; // NaN and negatives
  if (value >= 255) return 255;
  return roundHalfEven(value);
}

/**
 * The network's float output (height*width*3) -> ImageData: colours of `original` (RGB
 * bytes) kept when `preserveColor`, alpha put back when given.
 */
export function finishPixels(output, width, height, options = {}) {
  const { original = null, preserveColor = false, alpha = null } = options;
  const image = new ImageData(width, height);
  const rgba = image.data;
  const [yRow, cbRow, crRow] = RGB_TO_YCBCR;
  const count = width * height;
  for (let i = 0; i < count; i++) {
    let r = output[3 * i];
    let g = output[3 * i + 1];
    let b = output[3 * i + 2];
    if (preserveColor) {
      const y = Math.fround(r * yRow[0] + g * yRow[1] + b * yRow[2]);
      const [or, og, ob] = [original[3 * i], original[3 * i + 1], original[3 * i + 2]];
      const cb = Math.fround(or * cbRow[0] + og * cbRow[1] + ob * cbRow[2]);
      const cr = Math.fround(or * crRow[0] + og * crRow[1] + ob * crRow[2]);
      r = Math.fround(y * YCBCR_TO_RGB[0][0] + cb * YCBCR_TO_RGB[0][1] + cr * YCBCR_TO_RGB[0][2]);
      g = Math.fround(y * YCBCR_TO_RGB[1][0] + cb * YCBCR_TO_RGB[1][1] + cr * YCBCR_TO_RGB[1][2]);
      b = Math.fround(y * YCBCR_TO_RGB[2][0] + cb * YCBCR_TO_RGB[2][1] + cr * YCBCR_TO_RGB[2][2]);
    }
    rgba[4 * i] = toLevel(r);
    rgba[4 * i + 1] = toLevel(g);
    rgba[4 * i + 2] = toLevel(b);
    rgba[4 * i + 3] = alpha ? alpha[i] : 255;
  }
  return image;
}

/**
 * ImageData -> RGB bytes (height*width*3) at width x height, drawn with canvas drawImage and
 * imageSmoothingQuality "high": the browser's upsampler (Chromium's is a cubic filter), a
 * close cousin of the bicubic resize stylize.py and the service use (stroke.Stroke.finish),
 * not the same pixels.
 */
export function upsamplePixels(image, width, height) {
  const source = canvas(image.width, image.height);
  source.getContext("2d").putImageData(image, 0, 0);
  const context = context2d(canvas(width, height));
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  context.drawImage(source, 0, 0, width, height);
  return imageRgb(context.getImageData(0, 0, width, height));
}

// fnst_jax.brightness: the tone curve v -> 255 (v / 255)^g that gives the output the
// picture's mean BT.601 luma, g found by bisection on log2 g in [-4, 4] over the output's
// per-channel histograms.
const LUMA = [0.299, 0.587, 0.114];
const MAX_LOG2_GAMMA = 4;
const BISECTIONS = 40;

/** The mean luma of RGB bytes (count*3), in float64 from the channel sums. */
function meanLuma(rgb, count) {
  const sums = [0, 0, 0];
  for (let i = 0; i < count; i++) {
    sums[0] += rgb[3 * i];
    sums[1] += rgb[3 * i + 1];
    sums[2] += rgb[3 * i + 2];
  }
  return LUMA.reduce((total, weight, c) => total + (weight * sums[c]) / Math.max(1, count), 0);
}

/**
 * ImageData `image` given the mean luma of `pictureRgb` (RGB bytes of the same size): every
 * colour channel through one gamma curve (in place), then, with `preserveColor`, the
 * picture's colours again (a new ImageData, `alpha` put back as `finishPixels` does).
 */
export function keepBrightness(image, pictureRgb, options = {}) {
  const target = meanLuma(pictureRgb, pictureRgb.length / 3);
  const rgba = image.data;
  const count = image.width * image.height;
  const counts = [0, 1, 2].map(() => new Float64Array(256));
  for (let i = 0; i < count; i++) {
    counts[0][rgba[4 * i]] += 1;
    counts[1][rgba[4 * i + 1]] += 1;
    counts[2][rgba[4 * i + 2]] += 1;
  }
  const lumaAt = (log2Gamma) => {
    const gamma = 2 ** log2Gamma;
    let total = 0;
    for (let c = 0; c < 3; c++) {
      for (let v = 0; v < 256; v++) {
        total += ((LUMA[c] * counts[c][v]) / Math.max(1, count)) * (v / 255) ** gamma;
      }
    }
    return 255 * total;
  };
  let [low, high] = [-MAX_LOG2_GAMMA, MAX_LOG2_GAMMA];
  for (let i = 0; i < BISECTIONS; i++) {
    const middle = (low + high) / 2;
    if (lumaAt(middle) > target) low = middle;
    else high = middle;
  }
  const gamma = 2 ** ((low + high) / 2);
  const curve = new Uint8Array(256);
  for (let v = 0; v < 256; v++) curve[v] = toLevel(255 * (v / 255) ** gamma);
  for (let i = 0; i < count; i++) {
    rgba[4 * i] = curve[rgba[4 * i]];
    rgba[4 * i + 1] = curve[rgba[4 * i + 1]];
    rgba[4 * i + 2] = curve[rgba[4 * i + 2]];
  }
  if (!options.preserveColor) return image;
  return finishPixels(imageRgb(image), image.width, image.height, {
    ...options,
    original: pictureRgb,
  });
}

/** ImageData -> its RGB bytes (height*width*3). */
function imageRgb(image) {
  const rgba = image.data;
  const rgb = new Uint8Array(image.width * image.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

/** ImageData -> a Blob of `type` (image/png, image/jpeg, image/webp). */
export function encodePixels(image, type) {
  const surface = canvas(image.width, image.height);
  surface.getContext("2d").putImageData(image, 0, 0);
  return new Promise((resolve, reject) => {
    surface.toBlob(
      (blob) => (blob ? resolve(blob) : reject(new Error(`this browser cannot write ${type}`))),
      type,
      JPEG_QUALITY,
    );
  });
}

/** Draws ImageData onto a visible canvas, resizing the canvas to it. */
export function drawPixels(target, image) {
  if (target.width !== image.width) target.width = image.width;
  if (target.height !== image.height) target.height = image.height;
  target.getContext("2d").putImageData(image, 0, 0);
}
