// edgecls browser page: every per-model fact comes from models.json, which the server (or `edgecls web
// --out`) writes from each ONNX file's metadata_props; nothing here is specific to one model.
"use strict";
ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const state = { models: {}, session: null, info: null, backend: null, results: [] };
window.edgecls = state;  // read by the tests
const $ = (id) => document.getElementById(id);

function meta(props) {
  return {
    name: props.model, classes: JSON.parse(props.class_names), shape: JSON.parse(props.input_shape),
    mode: props.color_mode, mean: JSON.parse(props.mean), std: JSON.parse(props.std), scale: parseFloat(props.scale),
  };
}

async function loadModel(name) {
  $("status").textContent = `loading ${name}…`;
  $("results").querySelector("tbody").replaceChildren();  // rows belong to the model that made them
  const entry = state.models[name];
  state.info = meta(entry.metadata);
  const tries = navigator.gpu ? ["webgpu", "wasm"] : ["wasm"];
  for (const backend of tries) {
    try {
      state.session = await ort.InferenceSession.create(entry.url, { executionProviders: [backend] });
      state.backend = backend;
      break;
    } catch (err) {
      if (backend === tries[tries.length - 1]) throw err;
    }
  }
  $("status").textContent = `${name}: ${state.info.classes.length} classes, input ${state.info.shape.join("x")} ` +
    `${state.info.mode}; backend ${state.backend}${ort.env.wasm.numThreads > 1 ? ` (${ort.env.wasm.numThreads} threads)` : ""}`;
  state.ready = name;
}

// Decode with the browser, composite transparency onto black, resize to the model's H x W on a canvas
// (the browser's high-quality smoothing; Pillow's bilinear filter differs, see docs/guide/browser.md), then convert to
// L with Pillow's weights (ITU-R 601-2: 299/587/114, in Pillow's fixed-point form) and normalize.
async function toInput(file) {
  const [c, h, w] = state.info.shape;
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, w, h);
  const px = ctx.getImageData(0, 0, w, h).data;
  const x = new Float32Array(c * h * w);
  const { mean, std, scale } = state.info;
  for (let i = 0; i < h * w; i++) {
    const r = px[4 * i], g = px[4 * i + 1], b = px[4 * i + 2];
    if (c === 1) {
      const l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
      x[i] = (Math.fround(l * scale) - mean[0]) / std[0];
    } else {
      x[i] = (Math.fround(r * scale) - mean[0]) / std[0];
      x[h * w + i] = (Math.fround(g * scale) - mean[1]) / std[1];
      x[2 * h * w + i] = (Math.fround(b * scale) - mean[2]) / std[2];
    }
  }
  return new ort.Tensor("float32", x, [1, c, h, w]);
}

function softmax(logits) {
  const m = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

async function classify(files, k = 3) {
  const body = $("results").querySelector("tbody");
  for (const file of files) {
    const t0 = performance.now();
    let row;
    try {
      const input = await toInput(file);
      const t1 = performance.now();
      const out = await state.session.run({ [state.session.inputNames[0]]: input });
      var runMs = performance.now() - t1;
      const logits = Array.from(out[state.session.outputNames[0]].data);
      const probs = softmax(logits);
      const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]).slice(0, k);
      row = { file: file.name, logits, top: order.map((i) => [state.info.classes[i], probs[i]]),
              ms: performance.now() - t0, runMs, backend: state.backend };
    } catch (err) {  // kept for the tests; the page shows a plain sentence instead
      row = { file: file.name, error: String(err), ms: performance.now() - t0 };
    }
    row.truth = labelInName(file.name);
    if (row.truth !== null && !row.error) row.correct = slug(row.top[0][0]) === row.truth;
    state.results.push(row);
    body.appendChild(resultRow(file, row));
  }
  state.done = state.results.length;
}

// Sample files carry their true label in their name (samples/<dataset>/<index>_<label>.<ext>, the label
// made file-name safe as slug() does); a name that names one of the model's classes gets a right/wrong mark.
const slug = (label) => label.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
function labelInName(name) {
  const m = /^\d+_(.+)\.[^.]+$/.exec(name);
  return m && state.info.classes.some((c) => slug(c) === m[1]) ? m[1] : null;
}

function resultRow(file, row) {
  const tr = document.createElement("tr");
  const pic = tr.insertCell();
  if (row.error) {
    pic.className = "noimg";
    pic.textContent = "—";
  } else {
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    pic.appendChild(img);
  }
  tr.insertCell().textContent = file.name;
  const top = tr.insertCell();
  if (row.error) {
    top.className = "unreadable";
    top.textContent = "This file could not be read as an image (the browser cannot decode it); choose a PNG, JPEG, GIF, BMP or WebP file.";
  } else {
    for (const [label, p] of row.top) {  // one bar per label, its length the probability
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.title = `${label}: ${(100 * p).toFixed(2)}%`;
      const fill = document.createElement("span");
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      const text = document.createElement("em");
      text.textContent = `${label} ${(100 * p).toFixed(1)}%`;
      bar.append(fill, text);
      top.appendChild(bar);
    }
  }
  const truth = tr.insertCell();
  if (row.truth !== null && !row.error) {
    truth.className = row.correct ? "right" : "wrong";
    truth.textContent = `${row.correct ? "✓" : "✗"} ${row.truth}`;
  }
  tr.insertCell().textContent = row.ms.toFixed(2);
  return tr;
}

async function main() {
  const list = await (await fetch("models.json")).json();
  for (const m of list.models) state.models[m.name] = m;
  const select = $("model");
  for (const name of Object.keys(state.models)) select.add(new Option(name, name));
  select.onchange = () => loadModel(select.value).catch((e) => ($("status").textContent = `error: ${e}`));
  $("files").onchange = (e) => classify(Array.from(e.target.files));
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); classify(Array.from(e.dataTransfer.files)); };
  await loadModel(select.value);
}
main().catch((e) => ($("status").textContent = `error: ${e}`));
