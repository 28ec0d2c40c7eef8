// The localization page: one query image against the map (top-k matches and the query's heat map), or a route of
// frames sent one at a time on one stream (single-frame match beside the sequence match). Plain browser JavaScript,
// no build step; every request goes to this service's own HTTP API, relative to the page.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { heatmap: null, image: null, routeRunning: false, routeStop: false };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// fetch + JSON; a non-2xx answer throws the API's {"error": ...} message with the status
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error(`the service did not answer ${path} (${e.message}); is it still running?`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.error ? body.error : (text || response.statusText);
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function topK() {
  const k = parseInt($("k").value, 10);
  return Number.isFinite(k) ? k : 5;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmtDistance(d) {
  return typeof d === "number" ? d.toFixed(4) : String(d);
}

function fmtCoords(c) {
  return c ? `${c[0]}, ${c[1]}` : "\u2013";
}

function thumb(match) {
  const img = el("img", { src: match.url, alt: `map image ${match.row}`, class: "thumb", loading: "lazy" });
  img.title = match.image;
  return img;
}

// --- map panel ---------------------------------------------------------------------------------------------------

const INFO_FIELDS = [
  ["model", "model"], ["architecture", "architecture"], ["runtime", "runtime"], ["count", "images"],
  ["dim", "dimensions"], ["version", "version"], ["sequence_length", "sequence length"], ["max_batch", "max batch"],
  ["has_coords", "coordinates"], ["ram_bytes_per_image", "RAM bytes / image"],
  ["disk_bytes_per_image", "disk bytes / image"],
];

async function loadMapInfo() {
  const list = $("map-info");
  try {
    const info = await api("v1/map");
    list.replaceChildren();
    for (const [key, label] of INFO_FIELDS) {
      if (!(key in info)) continue;
      let value = info[key];
      if (typeof value === "number" && !Number.isInteger(value)) value = key.endsWith("_bytes_per_image")
        ? Math.round(value).toLocaleString("en") : value.toFixed(1);
      list.append(el("dt", {}, label), el("dd", { "data-key": key }, String(value)));
    }
    if (info.index) {
      const kind = info.index.kind || info.index.type || JSON.stringify(info.index);
      list.append(el("dt", {}, "index"), el("dd", { "data-key": "index" }, String(kind)));
    }
  } catch (e) {
    list.replaceChildren(el("dt", {}, "status"), el("dd", {}, "unavailable"));
    showError(`map info: ${e.message}`);
  }
}

// --- single image ------------------------------------------------------------------------------------------------

function renderMatches(matches) {
  const table = $("matches");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  for (const m of matches) {
    const row = el("tr", { "data-rank": m.rank, "data-row": m.row });
    const image = el("td");
    image.append(thumb(m));
    row.append(el("td", { class: "rank" }, String(m.rank)), image,
      el("td", { class: "place", "data-place": JSON.stringify(m.place) }, String(m.place)),
      el("td", { class: "distance", "data-distance": String(m.distance) }, fmtDistance(m.distance)),
      el("td", { class: "coords" }, fmtCoords(m.coords)));
    body.append(row);
  }
  table.hidden = matches.length === 0;
}

// a value in [0, 1] to a colour of a blue-cyan-yellow-red ramp
function heatColour(v) {
  const stops = [[0, 0, 160], [0, 200, 255], [255, 230, 0], [230, 0, 0]];
  const x = Math.min(Math.max(v, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const t = x - i;
  return stops[i].map((c, j) => Math.round(c + t * (stops[i + 1][j] - c)));
}

function drawQuery() {
  const canvas = $("query-canvas");
  const image = state.image;
  if (!image) return;
  const scale = Math.max(1, Math.min(8, Math.floor(480 / image.width)));
  canvas.width = image.width * scale;
  canvas.height = image.height * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale === 1;
  ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  const heat = state.heatmap;
  if (!heat || !$("show-heat").checked) return;
  const alpha = parseInt($("heat-alpha").value, 10) / 100;
  const layer = document.createElement("canvas");
  layer.width = heat.width;
  layer.height = heat.height;
  const lctx = layer.getContext("2d");
  const pixels = lctx.createImageData(heat.width, heat.height);
  for (let y = 0; y < heat.height; y++) {
    for (let x = 0; x < heat.width; x++) {
      const v = heat.values[y][x];
      const [r, g, b] = heatColour(v);
      const o = 4 * (y * heat.width + x);
      pixels.data.set([r, g, b, Math.round(255 * alpha * (0.25 + 0.75 * v))], o);
    }
  }
  lctx.putImageData(pixels, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(layer, 0, 0, canvas.width, canvas.height);
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = () => {
      URL.revokeObjectURL(url);
      resolve(image);
    };
    image.onerror = () => reject(new Error(`${file.name}: the browser cannot show this file as an image`));
    image.src = url;
  });
}

async function localizeOne(file) {
  clearError();
  $("status").textContent = `localizing ${file.name}\u2026`;
  $("status").dataset.state = "busy";
  state.heatmap = null;
  try {
    state.image = await loadImage(file).catch(() => null);
    const form = new FormData();
    form.append("images", file, file.name);
    const answer = await api(`v1/localize?k=${encodeURIComponent(topK())}&heatmap=1`, { method: "POST", body: form });
    const result = answer.results[0];
    state.heatmap = result.heatmap;
    $("query-name").textContent = `${result.name} (map version ${answer.map_version}, ${answer.model})`;
    $("query-view").hidden = false;
    drawQuery();
    const t = answer.timing_ms || {};
    $("timing").textContent = Object.entries(t).map(([k, v]) => `${k} ${Number(v).toFixed(1)} ms`).join(", ");
    renderMatches(result.matches);
    $("status").textContent = `${result.matches.length} matches for ${result.name}`;
    $("status").dataset.state = "done";
  } catch (e) {
    renderMatches([]);
    $("query-view").hidden = true;
    $("status").textContent = "";
    $("status").dataset.state = "error";
    showError(e.message);
  }
}

// --- route -------------------------------------------------------------------------------------------------------

function streamId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function matchCells(match, kind) {
  if (!match) return [el("td"), el("td", { class: `${kind}-place` }, "\u2013"), el("td")];
  const image = el("td");
  image.append(thumb(match));
  return [image, el("td", { class: `${kind}-place`, "data-place": JSON.stringify(match.place) }, String(match.place)),
    el("td", { class: `${kind}-distance`, "data-distance": String(match.distance) }, fmtDistance(match.distance))];
}

async function playRoute(files) {
  clearError();
  const ordered = Array.from(files).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  const stream = streamId();
  const body = $("route-table").querySelector("tbody");
  body.replaceChildren();
  $("route-table").hidden = false;
  $("route-table").dataset.stream = stream;
  state.routeRunning = true;
  state.routeStop = false;
  $("route-stop").disabled = false;
  $("route-status").dataset.state = "busy";
  let done = 0;
  try {
    for (const file of ordered) {
      if (state.routeStop) break;
      $("route-status").textContent = `frame ${done + 1} of ${ordered.length}: ${file.name}`;
      const form = new FormData();
      form.append("images", file, file.name);
      const url = `v1/localize?k=${encodeURIComponent(topK())}&stream=${stream}`;
      const result = (await api(url, { method: "POST", body: form })).results[0];
      const seq = result.sequence;
      const row = el("tr", { "data-frame": done + 1, "data-frames-seen": seq ? seq.frames : 0 });
      const frame = el("td");
      frame.append(el("img", { src: URL.createObjectURL(file), alt: file.name, class: "thumb" }));
      row.append(el("td", {}, String(done + 1)), el("td", { class: "file" }, result.name), frame,
        ...matchCells(result.matches[0], "single"), ...matchCells(seq ? seq.matches[0] : null, "sequence"));
      body.append(row);
      done += 1;
    }
    $("route-status").textContent = `${done} of ${ordered.length} frames localized on stream ${stream}`;
    $("route-status").dataset.state = "done";
  } catch (e) {
    $("route-status").textContent = `stopped after ${done} of ${ordered.length} frames`;
    $("route-status").dataset.state = "error";
    showError(e.message);
  } finally {
    state.routeRunning = false;
    $("route-stop").disabled = true;
  }
}

// --- wiring ------------------------------------------------------------------------------------------------------

function setMode(route) {
  $("single").hidden = route;
  $("route").hidden = !route;
  for (const [id, on] of [["mode-single", !route], ["mode-route", route]]) {
    $(id).classList.toggle("active", on);
    $(id).setAttribute("aria-pressed", String(on));
  }
}

function wire() {
  $("mode-single").addEventListener("click", () => setMode(false));
  $("mode-route").addEventListener("click", () => setMode(true));
  $("query-file").addEventListener("change", (e) => {
    if (e.target.files.length) localizeOne(e.target.files[0]);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) localizeOne(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("query-file").click();
  });
  $("show-heat").addEventListener("change", drawQuery);
  $("heat-alpha").addEventListener("input", drawQuery);
  $("route-files").addEventListener("change", (e) => {
    if (e.target.files.length && !state.routeRunning) playRoute(e.target.files);
  });
  $("route-stop").addEventListener("click", () => { state.routeStop = true; });
  loadMapInfo();
}

wire();
