// The webcam: a snapshot becomes the chosen photo; the live preview stylizes its frames on
// this device (on_device.js's `stylizeFrame`: the same options, stroke size included) as
// fast as the device goes, at most LIVE_MAX_SIDE px on the longest side.

import { reason } from "./device.js";
import { deviceModel, stylizeFrame } from "./on_device.js";
import { $, SETTINGS, clearResult, hideProgress, showMessage, state } from "./page.js";
import { drawPixels, targetSize } from "./pixels.js";

const LIVE_MAX_SIDE = 512; // px: the webcam preview's longest side at most

/** Shows the webcam's buttons where the browser offers a camera; setFile(blob, name)
 *  takes a snapshot. */
export function setUpCamera(setFile) {
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
      const { image, working } = await stylizeFrame(entry, model, video, width, height, {
        maxPixels: Math.max(SETTINGS.maxPixels, LIVE_MAX_SIDE * LIVE_MAX_SIDE),
      });
      drawPixels(canvas, image);
      times.push(performance.now());
      if (times.length > 10) times.shift();
      const rate =
        times.length > 1 ? ((times.length - 1) * 1000) / (times[times.length - 1] - times[0]) : 0;
      $("timing").textContent =
        (rate ? `${rate.toFixed(1)} frames/s` : "first frame") +
        ` on this device (${model.runtime.label}) · ${width}x${height}` +
        (working[0] === width ? "" : ` (the network at ${working[0]}x${working[1]})`);
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
