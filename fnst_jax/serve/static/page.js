// What the page's modules share: the page's state, its settings, and the few helpers that
// show messages, progress and results. app.js owns the controls and the server; device.js's
// models run through on_device.js; the webcam is camera.js.

import { DEFAULT_MAX_PIXELS, DEFAULT_TILE } from "./device.js";

export const $ = (id) => document.getElementById(id);

// The static site's model list (the meta tag is empty on the service's page).
export const SITE = document.querySelector('meta[name="fnst-site"]')?.content || "";
export const SETTINGS = pageSettings(new URLSearchParams(location.search));

export const state = {
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

export function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
}

export function hideMessage() {
  $("message").hidden = true;
}

export function showProgress(text) {
  $("progress").textContent = text;
  $("progress").hidden = false;
}

export function hideProgress() {
  $("progress").hidden = true;
  $("progress").textContent = "";
}

// The service's API key, when one was entered (stylize requests and model downloads).
export function keyHeaders() {
  const key = $("api-key").value.trim();
  if (!key) return {};
  sessionStorage.setItem("fnst-api-key", key);
  return { Authorization: `Bearer ${key}` };
}

export function clearResult() {
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

export function showResult(blob, parts) {
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
