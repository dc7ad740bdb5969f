// The page of `modnet-tools serve`: no framework, no build step, nothing loaded from elsewhere.
// Photo mode: POST /v1/matte for the matte, then the cut-out and composite are drawn here from
// the photo and the matte; downloads fetch the server's own PNGs (the bytes `infer` writes).
// Live mode: camera frames as JPEG over the /v1/live WebSocket, one frame in flight.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, photo: null, matte: null, matteBlob: null, tokenRequired: false };

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

function setStatus(el, text, isError) {
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch (e) {
    return response.statusText;
  }
}

async function matte(file, query) {
  const form = new FormData();
  form.append("file", file, file.name || "photo");
  const response = await fetch("/v1/matte?" + new URLSearchParams(query), {
    method: "POST", body: form, headers: authHeaders(),
  });
  if (!response.ok) {
    throw new Error(response.status + ": " + (await errorText(response)));
  }
  return response.blob();
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = URL.createObjectURL(blob);
  });
}

function pixels(img) {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// The cut-out: the photo's colours with the matte as alpha. The composite: the same blend
// as the server's, frame * a + colour * (1 - a), rounded.
function drawResults() {
  if (!state.photo || !state.matte) return;
  const photo = pixels(state.photo);
  const alpha = pixels(state.matte);
  if (photo.width !== alpha.width || photo.height !== alpha.height) {
    setStatus($("status"), "the matte does not match the photo's size", true);
    return;
  }
  const cut = new ImageData(photo.width, photo.height);
  const comp = new ImageData(photo.width, photo.height);
  const [r, g, b] = hexToRgb($("colour").value);
  const bg = [r, g, b];
  for (let i = 0; i < photo.data.length; i += 4) {
    const a = alpha.data[i];
    for (let c = 0; c < 3; c++) {
      cut.data[i + c] = photo.data[i + c];
      comp.data[i + c] = Math.floor((photo.data[i + c] * a + bg[c] * (255 - a) + 127) / 255);
    }
    cut.data[i + 3] = a;
    comp.data[i + 3] = 255;
  }
  for (const [id, data] of [["cutout", cut], ["composite", comp]]) {
    const canvas = $(id);
    canvas.width = data.width;
    canvas.height = data.height;
    canvas.getContext("2d").putImageData(data, 0, 0);
  }
  document.body.dataset.rendered = String(Date.now());
}

async function handleFile(file) {
  if (!file) return;
  state.file = file;
  for (const id of ["dl-alpha", "dl-rgba", "dl-composite"]) $(id).disabled = true;
  setStatus($("status"), "matting " + (file.name || "the photo") + "…");
  delete document.body.dataset.rendered;
  const started = performance.now();
  try {
    // The server first: its message says best what is wrong with a file.
    const matteBlob = await matte(file, { output: "alpha" });
    state.matteBlob = matteBlob;
    state.matte = await loadImage(matteBlob);
    $("matte").src = state.matte.src;
    for (const id of ["dl-alpha", "dl-rgba", "dl-composite"]) $(id).disabled = false;
    const ms = Math.round(performance.now() - started);
    const size = `${state.matte.naturalWidth}×${state.matte.naturalHeight}`;
    try {
      state.photo = await loadImage(file);
    } catch (err) {
      // TIFF, HEIC...: matted by the server, but this browser cannot draw the photo itself.
      state.photo = null;
      setStatus($("status"), `${size}, matted in ${ms} ms; this browser cannot show the photo itself (the downloads work)`);
      return;
    }
    $("original").src = state.photo.src;
    drawResults();
    setStatus($("status"), `${size}, matted in ${ms} ms`);
  } catch (err) {
    setStatus($("status"), err.message, true);
    document.body.dataset.error = err.message;
  }
}

function stem() {
  const name = (state.file && state.file.name) || "photo";
  return name.replace(/\.[^.]*$/, "") || "photo";
}

function save(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function download(kind) {
  try {
    if (kind === "alpha") {
      save(state.matteBlob, stem() + "_alpha.png");
    } else if (kind === "rgba") {
      save(await matte(state.file, { output: "rgba" }), stem() + "_rgba.png");
    } else {
      const blob = await matte(state.file, { output: "composite", background: $("colour").value });
      save(blob, stem() + "_composite.png");
    }
  } catch (err) {
    setStatus($("status"), err.message, true);
  }
}

// --- live mode ---------------------------------------------------------------------------

const live = { ws: null, stream: null, canvas: document.createElement("canvas"), times: [], frames: 0, url: null };

function liveSettings() {
  const settings = { output: $("live-output").value, format: "jpeg" };
  if (settings.output === "composite") settings.background = $("live-colour").value;
  const token = $("token").value.trim();
  if (token) settings.token = token;
  return settings;
}

function sendFrame() {
  const ws = live.ws;
  const video = $("live-video");
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  if (!video.videoWidth) {
    setTimeout(sendFrame, 50);
    return;
  }
  live.canvas.width = video.videoWidth;
  live.canvas.height = video.videoHeight;
  live.canvas.getContext("2d").drawImage(video, 0, 0);
  live.canvas.toBlob((blob) => {
    if (blob && live.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(blob);
  }, "image/jpeg", 0.85);
}

function showFrame(blob) {
  if (live.url) URL.revokeObjectURL(live.url);
  live.url = URL.createObjectURL(blob);
  $("live-result").src = live.url;
  const now = performance.now();
  live.times.push(now);
  while (live.times.length && now - live.times[0] > 2000) live.times.shift();
  live.frames += 1;
  const span = live.times.length > 1 ? (now - live.times[0]) / 1000 : 0;
  const fps = span > 0 ? (live.times.length - 1) / span : 0;
  const el = $("live-fps");
  el.textContent = fps.toFixed(1) + " fps";
  el.dataset.frames = String(live.frames);
  el.dataset.fps = fps.toFixed(2);
}

async function startLive() {
  setStatus($("live-status"), "asking for the camera…");
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    setStatus($("live-status"), "no camera: " + err.message, true);
    return;
  }
  $("live-video").srcObject = live.stream;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/v1/live");
  ws.binaryType = "blob";
  live.ws = ws;
  live.frames = 0;
  live.times = [];
  ws.onopen = () => ws.send(JSON.stringify(liveSettings()));
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.ok) {
        setStatus($("live-status"), "live: frames go to the server and come back matted");
        sendFrame();
      } else if (msg.error) {
        setStatus($("live-status"), msg.error, true);
        setTimeout(sendFrame, 1000 * (msg.retry_after || 0.2));
      }
      return;
    }
    showFrame(event.data);
    sendFrame();
  };
  ws.onclose = (event) => {
    if (live.ws === ws) {
      setStatus($("live-status"), "stopped" + (event.reason ? ": " + event.reason : ""), event.code !== 1000);
      stopLive();
    }
  };
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
}

function stopLive() {
  const ws = live.ws;
  live.ws = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

function updateLiveSettings() {
  if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(liveSettings()));
}

// --- wiring ------------------------------------------------------------------------------

function showTab(name) {
  $("photo-panel").hidden = name !== "photo";
  $("live-panel").hidden = name !== "live";
  $("tab-photo").classList.toggle("active", name === "photo");
  $("tab-live").classList.toggle("active", name === "live");
  if (name !== "live") stopLive();
}

async function init() {
  $("tab-photo").addEventListener("click", () => showTab("photo"));
  $("tab-live").addEventListener("click", () => showTab("live"));
  $("file").addEventListener("change", (e) => handleFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    handleFile(e.dataTransfer.files[0]);
  });
  $("colour").addEventListener("input", drawResults);
  $("dl-alpha").addEventListener("click", () => download("alpha"));
  $("dl-rgba").addEventListener("click", () => download("rgba"));
  $("dl-composite").addEventListener("click", () => download("composite"));
  $("live-start").addEventListener("click", startLive);
  $("live-stop").addEventListener("click", stopLive);
  $("live-output").addEventListener("change", updateLiveSettings);
  $("live-colour").addEventListener("change", updateLiveSettings);
  try {
    const info = await (await fetch("/v1/info")).json();
    $("model-info").textContent = `${info.model} · input ${info.input.join("×")} · ${info.precision}`;
    $("token-row").hidden = !info.token_required;
  } catch (err) {
    $("model-info").textContent = "server unreachable";
  }
  document.body.dataset.ready = "1";
}

init();
