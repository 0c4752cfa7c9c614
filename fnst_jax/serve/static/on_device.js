// "On this device": the page's options applied to a model running in this browser
// (device.js), and the choice of where to run.
//
// `stylizeFrame` is the one path from a picture to a stylized image here, for photos
// (`stylizeOnDevice`) and the webcam's live preview (camera.js), as fnst_jax.stylize.run
// does it: the picture at the output size; the network at the stroke scale's working size
// (stroke.js; tiled as device.js decides, at that size), then, below the output size and
// unless the page turns it off, its detail pass over that result enlarged (`detailSize`);
// the last result enlarged to the output size (pixels.js's `upsamplePixels`, the
// browser's cousin of stylize.py's bicubic); colours kept on request from the picture at
// the output size; the picture's brightness kept unless the page turns it off (pixels.js's
// `keepBrightness`). At a working size equal to the output size (S = 1, or "auto" for a
// model without a native size) the network's float output is finished directly.

import { DeviceModel, DeviceRuntime } from "./device.js";
import {
  $,
  SETTINGS,
  SITE,
  keyHeaders,
  showMessage,
  showProgress,
  showResult,
  state,
} from "./page.js";
import {
  OUTPUT_TYPES,
  decodePhoto,
  encodePixels,
  finishPixels,
  keepBrightness,
  photoPixels,
  targetSize,
  upsamplePixels,
} from "./pixels.js";
import { detailSize, parseScale, workingSize } from "./stroke.js";

const RUN_KEY = "fnst-run";

// The selected model's file on this device (downloaded and opened once per page).
export function deviceModel(entry) {
  if (!state.device.available) throw new Error(state.device.why);
  if (!entry.onnx) throw new Error(`model ${entry.name} offers no file for this device`);
  const url = entry.onnx.url;
  if (!state.device.models.has(url)) {
    state.device.runtime ||= new DeviceRuntime(runtimeUrl(), {
      backend: SETTINGS.backend,
      threads: SETTINGS.threads,
    });
    const loading = DeviceModel.load(state.device.runtime, url, showProgress, keyHeaders());
    loading.catch(() => state.device.models.delete(url)); // a later try starts over
    state.device.models.set(url, loading);
  }
  return state.device.models.get(url);
}

function runtimeUrl() {
  return (state.info && state.info.browser && state.info.browser.runtime_url) || "ort/";
}

// The style input of a multi-style file: the entry's style, blended as chosen.
function styleWeights(entry, model) {
  const names = model.file.styleNames;
  if (!names.length) return null;
  const weights = new Float32Array(names.length);
  const own = entry.onnx.style_index ?? Math.max(0, names.indexOf(entry.style ?? ""));
  const amount = $("blend-field").hidden ? 0 : Number($("blend-amount").value);
  const other = names.indexOf($("blend-with").value);
  weights[own] = 100 - (other >= 0 ? amount : 0);
  if (other >= 0) weights[other] += amount; // the file normalises the weights
  return weights;
}

/**
 * The network's [width, height] for an output of width x height with the chosen stroke
 * size. The native size is the file's property; a file made before files recorded it
 * (kept in the browser's cache) has the service's listing to fall back on.
 */
export function networkSize(entry, model, width, height) {
  const native = model.file.nativeSize ?? entry.native_size ?? null;
  return workingSize(width, height, parseScale($("stroke-scale").value), native);
}

/**
 * `source` (an ImageBitmap, or the webcam's video) stylized at width x height by `model`
 * with the page's options -> {image: ImageData, working: [width, height], detail: its
 * detail pass's [width, height] or null, networkMs (both passes)}.
 * options: maxPixels, tile and onProgress for device.js; keepAlpha: the picture's alpha.
 */
export async function stylizeFrame(entry, model, source, width, height, options = {}) {
  const { keepAlpha = false, ...network } = options;
  const [workWidth, workHeight] = networkSize(entry, model, width, height);
  const refused = model.refusal(workHeight, workWidth, network.maxPixels);
  if (refused) throw new Error(refused);
  const picture = await photoPixels(source, width, height);
  const rescaled = workWidth !== width || workHeight !== height;
  const input = rescaled ? await photoPixels(source, workWidth, workHeight) : picture;
  const detail = $("detail-pass").checked
    ? detailSize(width, height, [workWidth, workHeight])
    : null;
  const detailRefused = detail && model.refusal(detail[1], detail[0], network.maxPixels);
  if (detailRefused) throw new Error(detailRefused);
  const style = styleWeights(entry, model);
  const computing = performance.now();
  let output = await model.stylize(input.rgb, workHeight, workWidth, { ...network, style });
  let [lastWidth, lastHeight] = [workWidth, workHeight];
  if (detail) {
    const enlarged = upsamplePixels(finishPixels(output, workWidth, workHeight), ...detail);
    output = await model.stylize(enlarged, detail[1], detail[0], { ...network, style });
    [lastWidth, lastHeight] = detail;
  }
  const networkMs = performance.now() - computing;
  if (lastWidth !== width || lastHeight !== height) {
    output = upsamplePixels(finishPixels(output, lastWidth, lastHeight), width, height);
  }
  const finish = {
    original: picture.rgb,
    preserveColor: $("preserve-color").checked,
    alpha: keepAlpha ? picture.alpha : null,
  };
  let image = finishPixels(output, width, height, finish);
  if ($("keep-brightness").checked) image = keepBrightness(image, picture.rgb, finish);
  return { image, working: [workWidth, workHeight], detail, networkMs };
}

function outputType() {
  const chosen = $("format").value;
  if (chosen) return OUTPUT_TYPES[chosen];
  const own = state.file.type;
  return Object.values(OUTPUT_TYPES).includes(own) ? own : OUTPUT_TYPES.png;
}

export async function stylizeOnDevice() {
  const entry = state.models[state.model];
  const started = performance.now();
  showProgress("Reading the photo…");
  const bitmap = await decodePhoto(state.file);
  try {
    const [width, height] = targetSize(bitmap.width, bitmap.height, Number($("size").value));
    const model = await deviceModel(entry);
    const [workWidth, workHeight] = networkSize(entry, model, width, height);
    const at = workWidth === width ? "" : ` (the network at ${workWidth}x${workHeight})`;
    showProgress(`Stylizing ${width}x${height}${at} on this device (${model.runtime.label})…`);
    const { image, detail, networkMs } = await stylizeFrame(entry, model, bitmap, width, height, {
      maxPixels: SETTINGS.maxPixels,
      tile: SETTINGS.tile,
      onProgress: showProgress,
      keepAlpha: true,
    });
    const blob = await encodePixels(image, outputType());
    showResult(blob, [
      `${Math.round(performance.now() - started)} ms in all`,
      `network ${Math.round(networkMs)} ms at ${workWidth}x${workHeight}` +
        (detail ? `, then ${detail[0]}x${detail[1]}` : ""),
      `on this device (${model.runtime.label})`,
    ]);
    $("timing").dataset.networkMs = networkMs.toFixed(1); // for benchmarks/browser.py
    const notes = model.runtime.notes;
    $("device-note").textContent =
      `Ran with ${model.runtime.label}` + (notes.length ? `: ${notes[0]}.` : ".");
  } finally {
    bitmap.close();
  }
}

// -------------------------------------------------------------------------- where to run

export function runsOnDevice() {
  if (SITE) return true;
  const chosen = document.querySelector('input[name="run"]:checked');
  return state.device.available && chosen && chosen.value === "device";
}

// What the service offers for this device (GET /v1/info's `browser`), and the choice.
export function setUpRunChoice(info) {
  const browser = (info && info.browser) || {};
  const capable = typeof WebAssembly === "object" && typeof createImageBitmap === "function";
  state.device.available = Boolean(browser.available) && capable;
  state.device.why = !capable
    ? "this browser lacks WebAssembly or image decoding"
    : browser.reason || "this service offers no in-browser runtime";
  $("run-field").hidden = false;
  const device = document.querySelector('input[name="run"][value="device"]');
  device.disabled = !state.device.available;
  const engine = navigator.gpu ? "WebGPU if it works, else WebAssembly" : "WebAssembly";
  $("device-note").textContent = state.device.available
    ? `The model is downloaded once and runs in this browser (${engine}); the photo stays here.`
    : `Not available: ${state.device.why}.`;
  const wanted = SETTINGS.run || stored(RUN_KEY);
  if (state.device.available && wanted === "device") device.checked = true;
  for (const input of document.querySelectorAll('input[name="run"]')) {
    input.addEventListener("change", () => store(RUN_KEY, input.value));
  }
}

// The choice is remembered where the browser allows it (not in every private window).
function stored(key) {
  try {
    return localStorage.getItem(key);
  } catch (_) {
    return null;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch (_) {
    // not remembered: the page still works
  }
}

// A static site: no server, every photo on this device.
export function setUpStaticSite() {
  const capable = typeof WebAssembly === "object" && typeof createImageBitmap === "function";
  state.device.available = capable;
  state.device.why = "this browser lacks WebAssembly or image decoding";
  $("api-links").hidden = true;
  $("privacy").textContent = "Photos never leave this device: the model runs in this browser.";
  $("run-field").hidden = false; // no choice to make, but what runs the model is said there
  for (const choice of document.querySelectorAll(".run-choice")) choice.hidden = true;
  const engine = navigator.gpu ? "WebGPU if it works, else WebAssembly" : "WebAssembly";
  $("device-note").textContent = `The model runs in this browser (${engine}).`;
  if (!capable) showMessage(`This page cannot stylize here: ${state.device.why}.`);
}
