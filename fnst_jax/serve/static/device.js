// Stylize on the visitor's own device: an exported ONNX model in onnxruntime-web.
//
// `DeviceRuntime` loads onnxruntime-web from the runtime folder the service or the static
// site serves (ort/: the files `npm ci` put in web/node_modules/onnxruntime-web/dist/;
// nothing comes from a CDN). WebGPU is the first choice where the browser offers it
// (navigator.gpu and an adapter); if it cannot run the model, WebAssembly does, on as many
// threads as the page may use (several only when the page is cross-origin isolated: the
// service and the site's _headers send COOP/COEP), in a worker (ort's proxy mode) so the
// page stays responsive.
//
// `DeviceModel` is one downloaded model: its graph runs whole photos of up to `maxPixels`
// pixels; larger ones (and ones below the graph's smallest side) go through the file's
// tiling functions with exact statistics (tiling.js), one tile at a time, so memory stays
// bounded whatever the photo's size. Its float output is what fnst_jax.stylize computes
// (the test compares the two: tests/test_web_browser.py).

import {
  BOX_INPUT,
  INTERIOR_INPUT,
  OnnxFile,
  TILE_FUNCTION,
  TILE_INPUT,
  TILE_OUTPUT,
  givenNames,
  summaryNames,
} from "./onnx_file.js";
import { stylizeTiled } from "./tiling.js";

// Whole photos up to this many pixels of network input; larger ones are tiled. A float32
// activation of the first layer is 128 bytes a pixel; WebAssembly has at most 4 GB.
export const DEFAULT_MAX_PIXELS = 1024 * 1024;
export const DEFAULT_TILE = 512;
const FLOAT_OUTPUT = "stylized_float";
const IMAGE_INPUT = "image";
const STYLE_INPUT = "style";

const megabytes = (bytes) => (bytes / 1e6).toFixed(1);

/** The message of anything thrown (onnxruntime throws strings and numbers too). */
export function reason(error) {
  return (error && error.message) || String(error);
}

/** onnxruntime-web, with the execution provider chosen on the first model. */
export class DeviceRuntime {
  /**
   * runtimeUrl: the folder of the runtime files. backend: "auto" (WebGPU if it works, else
   * WebAssembly), "webgpu" or "wasm". threads: WebAssembly threads (0: as many as the page
   * may use, up to 4).
   */
  constructor(runtimeUrl, { backend = "auto", threads = 0 } = {}) {
    this.runtimeUrl = new URL(runtimeUrl, location.href).href;
    this.preference = backend;
    this.threads = threads;
    this.ort = null;
    this.backend = null; // "webgpu" or "wasm" once chosen
    this.notes = []; // why WebGPU was not used, in words
  }

  get label() {
    if (this.backend === "webgpu") return "WebGPU";
    if (this.backend !== "wasm") return "not started";
    const threads = this.ort.env.wasm.numThreads;
    return `WebAssembly, ${threads} thread${threads === 1 ? "" : "s"}`;
  }

  /** An InferenceSession of model bytes; the first call chooses the backend. */
  async session(bytes, options = {}) {
    if (this.backend) return this.create(bytes, options);
    if (this.preference !== "wasm") {
      const why = await this.tryWebGPU(bytes, options);
      if (why.session) return why.session;
      this.notes.push(why.note);
      if (this.preference === "webgpu") throw new Error(why.note);
    }
    await this.loadWasm();
    return this.create(bytes, options);
  }

  async tryWebGPU(bytes, options) {
    if (!navigator.gpu) return { note: "this browser offers no WebGPU" };
    let adapter = null;
    try {
      adapter = await navigator.gpu.requestAdapter();
    } catch (error) {
      return { note: `WebGPU is not available (${reason(error)})` };
    }
    if (!adapter) return { note: "WebGPU offers no adapter here (no usable GPU)" };
    try {
      this.ort = await import(new URL("ort.webgpu.min.mjs", this.runtimeUrl).href);
      this.ort.env.wasm.wasmPaths = this.runtimeUrl;
      this.ort.env.wasm.numThreads = 1; // WebGPU does the work
      this.backend = "webgpu";
      return { session: await this.create(bytes, options) };
    } catch (error) {
      this.backend = null;
      return { note: `WebGPU could not run the model (${reason(error)})` };
    }
  }

  async loadWasm() {
    this.ort = await import(new URL("ort.wasm.min.mjs", this.runtimeUrl).href);
    const env = this.ort.env.wasm;
    env.wasmPaths = this.runtimeUrl;
    // Threads need SharedArrayBuffer, which only cross-origin isolated pages have.
    const cores = navigator.hardwareConcurrency || 1;
    env.numThreads = self.crossOriginIsolated ? this.threads || Math.min(4, cores) : 1;
    env.proxy = true; // inference in a worker: the page keeps painting progress
    this.backend = "wasm";
  }

  create(bytes, options) {
    // The session takes the bytes (a transfer in proxy mode): give it a copy.
    return this.ort.InferenceSession.create(bytes.slice(), {
      executionProviders: [this.backend],
      ...options,
    });
  }

  /** An input tensor of a copy of `data`: in proxy mode a run hands its inputs' buffers
   *  over to the worker, and callers use theirs again (tiles in every pass, the photo for
   *  its colours). */
  tensor(type, data, dims) {
    return new this.ort.Tensor(type, data.slice(), dims);
  }
}

/**
 * Fetches a model with progress: onProgress({loaded, total}) (total 0 when unknown).
 * Throws an Error saying what the server answered.
 */
export async function download(url, onProgress, headers = {}) {
  const response = await fetch(url, { headers });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) detail = body.error.message;
    } catch (_) {
      // not JSON: keep the status line
    }
    throw new Error(`the model could not be downloaded (${detail})`);
  }
  const total = Number(response.headers.get("Content-Length")) || 0;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress?.({ loaded, total });
  }
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

/** One exported model on this device. */
export class DeviceModel {
  /**
   * Downloads and opens the model; onProgress(text) says what is happening; headers: the
   * request's (a service's API key).
   */
  static async load(runtime, url, onProgress, headers = {}) {
    onProgress?.("Downloading the model…");
    const bytes = await download(
      url,
      ({ loaded, total }) => {
        const of = total ? ` of ${megabytes(total)}` : "";
        onProgress?.(`Downloading the model: ${megabytes(loaded)}${of} MB…`);
      },
      headers,
    );
    let file;
    try {
      file = new OnnxFile(bytes);
    } catch (error) {
      throw new Error(`the downloaded model is unusable (${reason(error)})`);
    }
    onProgress?.("Starting the model on this device…");
    const session = await runtime.session(bytes);
    return new DeviceModel(runtime, file, session, bytes.length);
  }

  constructor(runtime, file, session, size) {
    this.runtime = runtime;
    this.file = file;
    this.session = session;
    this.size = size;
  }

  /** Whether a photo goes through the tiling functions rather than the graph whole. */
  needsTiling(height, width, maxPixels = DEFAULT_MAX_PIXELS) {
    const pad = this.file.pad;
    const side = (size) => Math.ceil((size + 2 * Math.min(pad, size - 1)) / 4) * 4;
    return side(height) * side(width) > maxPixels || Math.min(height, width) < this.file.minSide;
  }

  /** Why a photo of this size cannot be stylized here, or "" when it can. */
  refusal(height, width, maxPixels = DEFAULT_MAX_PIXELS) {
    if (!this.needsTiling(height, width, maxPixels) || this.file.canTile) return "";
    const pixels = (maxPixels / 1e6).toFixed(1);
    return (
      `a ${width}x${height} photo needs tiling on this device (above ${pixels} MP or below ` +
      `${this.file.minSide} px), and this model's file has no tiling functions (a multi-style ` +
      "model exported with all its styles): choose a smaller output size"
    );
  }

  /**
   * RGB bytes (height*width*3) -> the float32 output (same layout, 0..255, unrounded).
   * style: Float32Array of weights over the file's styles (files with a style input).
   * onProgress(text) says which stage runs.
   */
  async stylize(rgb, height, width, options = {}) {
    const { style = null, maxPixels = DEFAULT_MAX_PIXELS, tile = DEFAULT_TILE, onProgress } =
      options;
    const refused = this.refusal(height, width, maxPixels);
    if (refused) throw new Error(refused);
    if (this.needsTiling(height, width, maxPixels)) {
      return stylizeTiled(this, rgb, height, width, {
        pad: this.file.pad,
        tile,
        onProgress: (step) => onProgress?.(describeStep(step)),
      });
    }
    const feeds = { [IMAGE_INPUT]: this.runtime.tensor("uint8", rgb, [1, height, width, 3]) };
    if (this.file.styleNames.length) {
      const weights = style || oneHot(this.file.styleNames.length, 0);
      feeds[STYLE_INPUT] = this.runtime.tensor("float32", weights, [1, weights.length]);
    }
    const outputs = await this.session.run(feeds, [FLOAT_OUTPUT]);
    return outputs[FLOAT_OUTPUT].data;
  }

  // -- tiling.js's engine: the file's tile_forward function, one pass model at a time

  async functionSession(outputs) {
    // One pass's model holds the weights up to its layer; it is released after the pass
    // (memory), and without the CPU arena, which would keep each pass's peak.
    const bytes = this.file.functionModel(TILE_FUNCTION, outputs);
    return this.runtime.session(bytes, { enableCpuMemArena: false, enableMemPattern: false });
  }

  tileFeeds(session, tile, shape, given) {
    const int64 = (values) => this.runtime.tensor("int64", BigInt64Array.from(values, BigInt), [4]);
    const feeds = {
      [TILE_INPUT]: this.runtime.tensor("uint8", tile.array, [1, shape[0], shape[1], 3]),
      [BOX_INPUT]: int64(tile.box),
      [INTERIOR_INPUT]: int64(tile.interior),
    };
    given.forEach(({ mean, variance }, layer) => {
      const [meanName, varianceName] = givenNames(layer);
      feeds[meanName] = this.runtime.tensor("float32", mean, [mean.length]);
      feeds[varianceName] = this.runtime.tensor("float32", variance, [variance.length]);
    });
    // A pass's model takes only the inputs its layers need.
    return Object.fromEntries(session.inputNames.map((name) => [name, feeds[name]]));
  }

  /** Per tile, norm layer `layer`'s input summarised over its interior. */
  async summaries(layer, given, tiles, onTile) {
    const names = summaryNames(layer);
    const session = await this.functionSession(names);
    try {
      const summaries = [];
      for (const [index, tile] of tiles.list.entries()) {
        onTile?.(index);
        const out = await session.run(this.tileFeeds(session, tile, tiles.shape, given), names);
        summaries.push({
          count: out[names[0]].data[0],
          mean: out[names[1]].data,
          squares: out[names[2]].data,
        });
      }
      return summaries;
    } finally {
      await session.release();
    }
  }

  /** The output pass: onResult(index, float32 tile output) for every tile. */
  async tileOutputs(statistics, tiles, onResult) {
    const session = await this.functionSession([TILE_OUTPUT]);
    try {
      for (const [index, tile] of tiles.list.entries()) {
        const out = await session.run(this.tileFeeds(session, tile, tiles.shape, statistics), [
          TILE_OUTPUT,
        ]);
        onResult(index, out[TILE_OUTPUT].data);
      }
    } finally {
      await session.release();
    }
  }
}

export function oneHot(length, index) {
  const weights = new Float32Array(length);
  weights[index] = 1;
  return weights;
}

function describeStep(step) {
  const tile = `tile ${step.tile + 1} of ${step.tiles}`;
  if (step.stage === "statistics") {
    return `Measuring the photo in tiles: layer ${step.layer + 1} of ${step.layers}, ${tile}…`;
  }
  return `Painting the photo in tiles: ${tile}…`;
}
