// The web page of `python serve.py`: choose a photo (file, drop, paste or webcam), pick a
// style from the loaded models, POST it to /v1/stylize, show the result beside the
// original with a download link. Plain JavaScript, no libraries, nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  info: null,       // GET /v1/info: limits
  file: null,       // the chosen photo (a File or Blob)
  baseName: "photo",
  model: null,      // the selected model's name
  models: {},       // GET /v1/models, by name
  originalUrl: null,
  resultUrl: null,
  busy: false,
  stream: null,     // the webcam, while it is on
};

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
    gallery.textContent = "This service has no models loaded.";
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
  if (limit && file.size > limit) {
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
    $("camera-snap").hidden = false;
    $("camera-start").hidden = true;
    await video.play();
  });
  $("camera-snap").addEventListener("click", () => {
    const video = $("camera-video");
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => setFile(blob, "webcam.jpg"), "image/jpeg", 0.92);
    for (const track of state.stream.getTracks()) track.stop();
    state.stream = null;
    video.hidden = true;
    $("camera-snap").hidden = true;
    $("camera-start").hidden = false;
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
  const mix = blendParameter();
  if (mix) params.set("mix", mix);
  return `/v1/stylize?${params}`;
}

function requestHeaders() {
  const type = state.file.type || "";
  const headers = { "Content-Type": type.startsWith("image/") ? type : "application/octet-stream" };
  const key = $("api-key").value.trim();
  if (key) {
    headers.Authorization = `Bearer ${key}`;
    sessionStorage.setItem("fnst-api-key", key);
  }
  return headers;
}

async function stylize() {
  if (!state.file || !state.model || state.busy) return;
  hideMessage();
  clearResult();
  setBusy(true);
  const started = performance.now();
  try {
    const response = await fetch(requestUrl(), {
      method: "POST",
      body: state.file,
      headers: requestHeaders(),
    });
    if (!response.ok) {
      if (response.status === 401) $("key-field").hidden = false;
      showMessage(await errorText(response), response.status === 503 ? "warning" : "error");
      return;
    }
    const blob = await response.blob();
    showResult(blob, response.headers, performance.now() - started);
  } catch (error) {
    showMessage(`The service could not be reached (${error.message}).`);
  } finally {
    setBusy(false);
  }
}

function showResult(blob, headers, milliseconds) {
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
  const parts = [`${Math.round(milliseconds)} ms in all`];
  if (headers.get("X-Network-Time-Ms")) {
    parts.push(`network ${Math.round(Number(headers.get("X-Network-Time-Ms")))} ms`);
  }
  if (headers.get("X-Batch-Size")) parts.push(`batch of ${headers.get("X-Batch-Size")}`);
  $("timing").textContent = parts.join(" · ");
}

// -------------------------------------------------------------------------- start

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
    const [info, models] = await Promise.all([getJSON("/v1/info"), getJSON("/v1/models")]);
    state.info = info;
    if (info.api_key_required) $("key-field").hidden = false;
    if (!info.ready) {
      showMessage("The service is still compiling its models; stylizing works in a moment.", "info");
    }
    buildGallery(models);
  } catch (error) {
    $("gallery").textContent = "";
    showMessage(`Cannot reach the service (${error.message}).`);
  }
  updateButton();
}

start();
