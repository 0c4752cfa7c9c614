// The web page of `python serve.py` and of a static site (`python -m fnst_jax.export
// --format web`): choose a photo (file, drop, paste or webcam), pick a style, stylize, show
// the result beside the original with a download link. Plain JavaScript modules, no
// build step, nothing from elsewhere.
//
// Two places run the model:
//   * the server: POST /v1/stylize (the service's page; the default there);
//   * this device: the model's ONNX file in onnxruntime-web (device.js), downloaded once,
//     with the same options (size, preserve colours, style and mix). On the service's page
//     this is the "On this device" choice, and whatever it cannot do (no runtime, a model
//     or photo the device cannot run, a file this browser cannot decode) goes to the
//     server instead, with the reason shown. A static site has no server: its page runs
//     every photo on the device, and the webcam's live preview too.
// Advanced settings ride on the page's URL (docs/browser.md): ?run=device|server,
// backend=auto|webgpu|wasm, threads=N, max_pixels=N, tile=N.

import { DEFAULT_MAX_PIXELS, DEFAULT_TILE, DeviceModel, DeviceRuntime, reason } from "./device.js";
import {
  OUTPUT_TYPES,
  decodePhoto,
  drawPixels,
  encodePixels,
  finishPixels,
  photoPixels,
  targetSize,
} from "./pixels.js";

const $ = (id) => document.getElementById(id);

// The static site's model list (the meta tag is empty on the service's page).
const SITE = document.querySelector('meta[name="fnst-site"]')?.content || "";
const SETTINGS = pageSettings(new URLSearchParams(location.search));
const LIVE_MAX_SIDE = 512; // px: the webcam preview's longest side at most
const RUN_KEY = "fnst-run";

const state = {
  info: null,       // GET /v1/info: limits (null on a static site)
  file: null,       // the chosen photo (a File or Blob)
  baseName: "photo",
  model: null,      // the selected model's name
  models: {},       // GET /v1/models (or site.json's models), by name
  originalUrl: null,
  resultUrl: null,
  busy: false,
  stream: null,     // the webcam, while it is on
  device: {
    available: false,  // whether this page can run models here at all
    why: "",           // why not, in words
    runtime: null,     // DeviceRuntime, made on first use
    models: new Map(), // ONNX URL -> Promise<DeviceModel>
  },
  live: null,       // the live preview loop, while it runs: {stop}
};

function pageSettings(params) {
  const number = (name, fallback) => {
    const value = Number(params.get(name));
    return Number.isFinite(value) && value > 0 ? value : fallback;
  };
  return {
    run: params.get("run"),
    backend: params.get("backend") || "auto",
    threads: number("threads", 0),
    maxPixels: number("max_pixels", DEFAULT_MAX_PIXELS),
    tile: Math.ceil(number("tile", DEFAULT_TILE) / 4) * 4,
  };
}

const EXTENSIONS = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp" };
const STATUS_PREFIX = {
  400: "Could not read the image: ",
  401: "API key needed: ",
  404: "Unknown style: ",
  413: "Too large: ",
  415: "Not an image: ",
  422: "Invalid option: ",
  503: "Busy: ",
  504: "Too slow: ",
};

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

function megabytes(bytes) {
  return (bytes / (1024 * 1024)).toFixed(1);
}

function updateButton() {
  $("stylize").disabled = state.busy || !state.file || !state.model;
}

// -------------------------------------------------------------------------- styles

function colourFor(name) {
  let hash = 0;
  for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 45% 45%)`;
}

function styleCard(model) {
  const card = document.createElement("button");
  card.type = "button";
  card.className = "style-card";
  card.setAttribute("role", "radio");
  card.setAttribute("aria-checked", "false");
  card.dataset.model = model.name;
  card.title = model.step != null ? `${model.name} (step ${model.step})` : model.name;
  let thumb;
  if (model.thumbnail_url) {
    thumb = document.createElement("img");
    thumb.src = model.thumbnail_url;
    thumb.alt = "";
  } else {
    thumb = document.createElement("span");
    thumb.textContent = model.name.slice(0, 1).toUpperCase();
    thumb.style.background = colourFor(model.name);
  }
  thumb.className = "thumb";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = model.name;
  if (model.style && model.style !== model.name) {
    const style = document.createElement("span");
    style.className = "style-name";
    style.textContent = model.style;
    label.append(style);
  }
  card.append(thumb, label);
  card.addEventListener("click", () => selectModel(model.name));
  return card;
}

function buildGallery(models) {
  const gallery = $("gallery");
  gallery.textContent = "";
  if (!models.length) {
    gallery.textContent = SITE
      ? "This site lists no models."
      : "This service has no models loaded.";
    return;
  }
  for (const model of models) {
    state.models[model.name] = model;
    gallery.append(styleCard(model));
  }
  selectModel(models[0].name);
}

function selectModel(name) {
  state.model = name;
  for (const card of document.querySelectorAll(".style-card")) {
    card.setAttribute("aria-checked", String(card.dataset.model === name));
  }
  updateBlend();
  updateButton();
}

// A style of a multi-style model can be blended with its other styles (?mix=).
function updateBlend() {
  const model = state.models[state.model];
  const others = model ? (model.styles || []).filter((style) => style !== model.style) : [];
  $("blend-field").hidden = others.length === 0;
  const select = $("blend-with");
  select.textContent = "";
  for (const style of others) select.append(new Option(style, style));
  $("blend-amount").value = "0";
  $("blend-value").textContent = "0%";
}

function blendParameter() {
  const model = state.models[state.model];
  const amount = Number($("blend-amount").value);
  if ($("blend-field").hidden || !amount || !$("blend-with").value) return null;
  return `${model.style}:${100 - amount},${$("blend-with").value}:${amount}`;
}

// -------------------------------------------------------------------------- the photo

function setFile(file, name) {
  if (!file) return;
  const limit = state.info && state.info.max_upload_bytes;
  if (limit && file.size > limit && !runsOnDevice()) {
    showMessage(
      `Too large: this file is ${megabytes(file.size)} MB; the service accepts up to ` +
        `${megabytes(limit)} MB.`,
    );
    return;
  }
  hideMessage();
  state.file = file;
  state.baseName = (name || "photo").replace(/\.[^.]*$/, "") || "photo";
  $("file-name").textContent = name || "photo";
  if (state.originalUrl) URL.revokeObjectURL(state.originalUrl);
  state.originalUrl = URL.createObjectURL(file);
  const original = $("original");
  original.onload = () => {
    original.hidden = false;
    $("original-empty").hidden = true;
  };
  original.onerror = () => {
    // Not something this browser can show (e.g. TIFF): the service may still read it.
    original.hidden = true;
    $("original-empty").textContent = "No preview for this file";
    $("original-empty").hidden = false;
  };
  original.src = state.originalUrl;
  clearResult();
  updateButton();
}

function clearResult() {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = null;
  $("result").hidden = true;
  $("result").removeAttribute("src");
  $("result").dataset.loaded = "false";
  $("result-empty").hidden = false;
  $("download").hidden = true;
  $("timing").textContent = "";
  delete $("timing").dataset.networkMs;
  delete $("timing").dataset.rate;
}

function setUpPhotoInputs() {
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) setFile(file, file.name);
  });
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) setFile(file, file.name);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) setFile(item.getAsFile(), "pasted");
  });
}

// -------------------------------------------------------------------------- webcam

function setUpCamera() {
  // Browsers offer the camera only on https:// or localhost pages.
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) return;
  $("camera").hidden = false;
  $("camera-start").addEventListener("click", async () => {
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (error) {
      showMessage(`The webcam is not available (${error.message}).`, "warning");
      return;
    }
    const video = $("camera-video");
    video.srcObject = state.stream;
    video.hidden = false;
    $("camera-start").hidden = true;
    await video.play(); // frames (and the video's size) from here on
    $("camera-snap").hidden = false;
    $("camera-live").hidden = !state.device.available;
  });
  $("camera-snap").addEventListener("click", () => {
    const video = $("camera-video");
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => setFile(blob, "webcam.jpg"), "image/jpeg", 0.92);
    stopCamera();
  });
  $("camera-live").addEventListener("click", () => {
    if (state.live) state.live.stop = true;
    else livePreviewLoop();
  });
}

function stopCamera() {
  if (state.live) state.live.stop = true;
  for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  $("camera-video").hidden = true;
  $("camera-snap").hidden = true;
  $("camera-live").hidden = true;
  $("camera-start").hidden = false;
}

// The webcam stylized on this device, frame after frame, as fast as the device goes; the
// rate over the last frames is shown.
async function livePreviewLoop() {
  if (!state.models[state.model] || state.busy) return;
  const live = (state.live = { stop: false });
  const canvas = $("live");
  const video = $("camera-video");
  $("camera-live").textContent = "Stop live preview";
  clearResult();
  const times = [];
  try {
    while (!live.stop && state.stream) {
      if (!video.videoWidth) {
        await new Promise((resolve) => setTimeout(resolve, 50)); // no frame yet
        continue;
      }
      // The style chosen now (another model's file is downloaded once, then kept).
      const entry = state.models[state.model];
      const model = await deviceModel(entry);
      if (canvas.hidden) {
        canvas.hidden = false;
        $("result-empty").hidden = true;
        hideProgress();
      }
      const side = Math.min(Number($("size").value) || LIVE_MAX_SIDE, LIVE_MAX_SIDE);
      const [width, height] = targetSize(video.videoWidth, video.videoHeight, side);
      const pixels = await photoPixels(video, width, height);
      const output = await model.stylize(pixels.rgb, height, width, {
        style: styleWeights(entry, model),
        maxPixels: Math.max(SETTINGS.maxPixels, LIVE_MAX_SIDE * LIVE_MAX_SIDE),
      });
      drawPixels(
        canvas,
        finishPixels(output, width, height, {
          original: pixels.rgb,
          preserveColor: $("preserve-color").checked,
        }),
      );
      times.push(performance.now());
      if (times.length > 10) times.shift();
      const rate =
        times.length > 1 ? ((times.length - 1) * 1000) / (times[times.length - 1] - times[0]) : 0;
      $("timing").textContent =
        (rate ? `${rate.toFixed(1)} frames/s` : "first frame") +
        ` on this device (${model.runtime.label}) · ${width}x${height}`;
      $("timing").dataset.rate = rate.toFixed(2);
    }
  } catch (error) {
    showMessage(`The live preview stopped: ${reason(error)}.`);
  } finally {
    state.live = null;
    canvas.hidden = true;
    hideProgress();
    if (!state.resultUrl) $("result-empty").hidden = false;
    $("camera-live").textContent = "Live preview";
  }
}

// -------------------------------------------------------------------------- stylize

function setBusy(busy) {
  state.busy = busy;
  $("spinner").hidden = !busy;
  $("stylize").textContent = busy ? "Stylizing…" : "Stylize";
  updateButton();
}

function showProgress(text) {
  $("progress").textContent = text;
  $("progress").hidden = false;
}

function hideProgress() {
  $("progress").hidden = true;
  $("progress").textContent = "";
}

async function errorText(response) {
  let text = `the service answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) text = body.error.message;
  } catch (_) {
    // not JSON: keep the status line
  }
  const retry = response.headers.get("Retry-After");
  if (response.status === 503 && retry) text += ` (try again in ${retry} s)`;
  return (STATUS_PREFIX[response.status] || "Error: ") + text;
}

function requestUrl() {
  const params = new URLSearchParams({ model: state.model });
  if ($("size").value) params.set("size", $("size").value);
  if ($("format").value) params.set("format", $("format").value);
  if ($("preserve-color").checked) params.set("preserve_color", "true");
  const mix = blendParameter();
  if (mix) params.set("mix", mix);
  return `/v1/stylize?${params}`;
}

function requestHeaders() {
  const type = state.file.type || "";
  return {
    "Content-Type": type.startsWith("image/") ? type : "application/octet-stream",
    ...keyHeaders(),
  };
}

// The service's API key, when one was entered (stylize requests and model downloads).
function keyHeaders() {
  const key = $("api-key").value.trim();
  if (!key) return {};
  sessionStorage.setItem("fnst-api-key", key);
  return { Authorization: `Bearer ${key}` };
}

async function stylize() {
  if (!state.file || !state.model || state.busy) return;
  if (state.live) state.live.stop = true;
  hideMessage();
  clearResult();
  setBusy(true);
  try {
    let fallback = "";
    if (runsOnDevice()) {
      try {
        await stylizeOnDevice();
        return;
      } catch (error) {
        fallback = reason(error);
      }
      if (SITE) {
        showMessage(`Could not stylize on this device: ${fallback}.`);
        return;
      }
    }
    await stylizeOnServer(fallback);
  } finally {
    hideProgress();
    setBusy(false);
  }
}

// `fallback`: why the device did not do it ("" when the server was chosen).
async function stylizeOnServer(fallback) {
  const because = fallback ? ` (sent to the server because ${fallback})` : "";
  const limit = state.info && state.info.max_upload_bytes;
  if (limit && state.file.size > limit) {
    showMessage(
      `Too large: this file is ${megabytes(state.file.size)} MB; the service accepts up to ` +
        `${megabytes(limit)} MB${because}.`,
    );
    return;
  }
  if (fallback) showProgress(`Stylizing on the server: ${fallback}.`);
  const started = performance.now();
  try {
    const response = await fetch(requestUrl(), {
      method: "POST",
      body: state.file,
      headers: requestHeaders(),
    });
    if (!response.ok) {
      if (response.status === 401) $("key-field").hidden = false;
      const kind = response.status === 503 ? "warning" : "error";
      showMessage((await errorText(response)) + because, kind);
      return;
    }
    const blob = await response.blob();
    const parts = [`${Math.round(performance.now() - started)} ms in all`];
    if (response.headers.get("X-Network-Time-Ms")) {
      parts.push(`network ${Math.round(Number(response.headers.get("X-Network-Time-Ms")))} ms`);
    }
    if (response.headers.get("X-Batch-Size")) {
      parts.push(`batch of ${response.headers.get("X-Batch-Size")}`);
    }
    if (fallback) {
      parts.push("on the server");
      showMessage(`Ran on the server instead: ${fallback}.`, "warning");
    }
    showResult(blob, parts);
  } catch (error) {
    showMessage(`The service could not be reached (${error.message})${because}.`);
  }
}

// The selected model's file on this device (downloaded and opened once per page).
function deviceModel(entry) {
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

function outputType() {
  const chosen = $("format").value;
  if (chosen) return OUTPUT_TYPES[chosen];
  const own = state.file.type;
  return Object.values(OUTPUT_TYPES).includes(own) ? own : OUTPUT_TYPES.png;
}

async function stylizeOnDevice() {
  const entry = state.models[state.model];
  const started = performance.now();
  showProgress("Reading the photo…");
  const bitmap = await decodePhoto(state.file);
  try {
    const [width, height] = targetSize(bitmap.width, bitmap.height, Number($("size").value));
    const model = await deviceModel(entry);
    const refused = model.refusal(height, width, SETTINGS.maxPixels);
    if (refused) throw new Error(refused);
    const pixels = await photoPixels(bitmap, width, height);
    showProgress(`Stylizing ${width}x${height} on this device (${model.runtime.label})…`);
    const computing = performance.now();
    const output = await model.stylize(pixels.rgb, height, width, {
      style: styleWeights(entry, model),
      maxPixels: SETTINGS.maxPixels,
      tile: SETTINGS.tile,
      onProgress: showProgress,
    });
    const network = performance.now() - computing;
    const image = finishPixels(output, width, height, {
      original: pixels.rgb,
      preserveColor: $("preserve-color").checked,
      alpha: pixels.alpha,
    });
    const blob = await encodePixels(image, outputType());
    showResult(blob, [
      `${Math.round(performance.now() - started)} ms in all`,
      `network ${Math.round(network)} ms`,
      `on this device (${model.runtime.label})`,
    ]);
    $("timing").dataset.networkMs = network.toFixed(1); // for benchmarks/browser.py
    const notes = model.runtime.notes;
    $("device-note").textContent =
      `Ran with ${model.runtime.label}` + (notes.length ? `: ${notes[0]}.` : ".");
  } finally {
    bitmap.close();
  }
}

function showResult(blob, parts) {
  state.resultUrl = URL.createObjectURL(blob);
  const result = $("result");
  result.onload = () => {
    result.hidden = false;
    $("result-empty").hidden = true;
    result.dataset.loaded = "true";
  };
  result.dataset.loaded = "false";
  result.src = state.resultUrl;
  const extension = EXTENSIONS[blob.type] || "png";
  const download = $("download");
  download.href = state.resultUrl;
  download.download = `${state.baseName}_${state.model}.${extension}`;
  download.hidden = false;
  $("timing").textContent = parts.join(" · ");
}

// -------------------------------------------------------------------------- where to run

function runsOnDevice() {
  if (SITE) return true;
  const chosen = document.querySelector('input[name="run"]:checked');
  return state.device.available && chosen && chosen.value === "device";
}

// What the service offers for this device (GET /v1/info's `browser`), and the choice.
function setUpRunChoice(info) {
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
function setUpStaticSite() {
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

// -------------------------------------------------------------------------- start

async function loadModels() {
  if (SITE) {
    setUpStaticSite();
    const site = await getJSON(SITE);
    return site.models;
  }
  const [info, models] = await Promise.all([getJSON("/v1/info"), getJSON("/v1/models")]);
  state.info = info;
  setUpRunChoice(info);
  if (info.api_key_required) $("key-field").hidden = false;
  if (!info.ready) {
    showMessage("The service is still compiling its models; stylizing works in a moment.", "info");
  }
  return models;
}

async function start() {
  setUpPhotoInputs();
  setUpCamera();
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    stylize();
  });
  $("api-key").value = sessionStorage.getItem("fnst-api-key") || "";
  $("blend-amount").addEventListener("input", () => {
    $("blend-value").textContent = `${$("blend-amount").value}%`;
  });
  try {
    buildGallery(await loadModels());
  } catch (error) {
    $("gallery").textContent = "";
    const what = SITE ? "read this site's models" : "reach the service";
    showMessage(`Cannot ${what} (${error.message}).`);
  }
  updateButton();
}

start();
