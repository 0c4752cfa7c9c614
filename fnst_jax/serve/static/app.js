// The web page of `python serve.py` and of a static site (`python -m fnst_jax.export
// --format web`): choose a photo (file, drop, paste or webcam), pick a style, stylize, show
// the result beside the original with a download link. Plain JavaScript modules, no
// build step, nothing from elsewhere.
//
// Two places run the model:
//   * the server: POST /v1/stylize (the service's page; the default there);
//   * this device: the model's ONNX file in onnxruntime-web (device.js), downloaded once,
//     with the same options (size, stroke size, preserve colours, style and mix). On the
//     service's page this is the "On this device" choice, and whatever it cannot do (no
//     runtime, a model or photo the device cannot run, a file this browser cannot decode)
//     goes to the server instead, with the reason shown. A static site has no server: its
//     page runs every photo on the device, and the webcam's live preview too.
// Advanced settings ride on the page's URL (docs/browser.md): ?run=device|server,
// backend=auto|webgpu|wasm, threads=N, max_pixels=N, tile=N.
//
// This module holds the controls, the styles, the photo and the server's requests;
// on_device.js runs the model here (the stroke size too: stroke.js), camera.js the webcam,
// page.js what they share.

import { setUpCamera } from "./camera.js";
import { reason } from "./device.js";
import { runsOnDevice, setUpRunChoice, setUpStaticSite, stylizeOnDevice } from "./on_device.js";
import {
  $,
  SITE,
  clearResult,
  hideMessage,
  hideProgress,
  keyHeaders,
  showMessage,
  showProgress,
  showResult,
  state,
} from "./page.js";

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

// -------------------------------------------------------------------------- stylize

function setBusy(busy) {
  state.busy = busy;
  $("spinner").hidden = !busy;
  $("stylize").textContent = busy ? "Stylizing…" : "Stylize";
  updateButton();
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
  params.set("stroke_scale", $("stroke-scale").value);
  if (!$("detail-pass").checked) params.set("detail_pass", "false");
  if (!$("keep-brightness").checked) params.set("keep_brightness", "false");
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
      const working = response.headers.get("X-Working-Size");
      const detail = response.headers.get("X-Detail-Size");
      parts.push(
        `network ${Math.round(Number(response.headers.get("X-Network-Time-Ms")))} ms` +
          (working ? ` at ${working}` : "") +
          (detail ? `, then ${detail}` : ""),
      );
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
  setUpCamera(setFile);
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
