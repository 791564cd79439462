// p2p's web page: a p2p model translating a drawing, a picture or the webcam in the browser.
// model.json (written by p2p from runtime/contract.py) says how to run model.onnx; onnxruntime-web
// runs it from ./ort/ (WebGPU where the browser offers an adapter, else WebAssembly).
import { MaskSampler } from "./masks.js";
import { canny, gray, inputPicture, inputTensor, outputPicture } from "./adapters.js";
import { metadataProps } from "./onnx-meta.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

const state = {
  contract: null, session: null, ort: null, ep: "", threads: 1,
  width: 0, height: 0, source: "draw", noise: params.get("noise") || "per-frame", sampler: null,
  dirty: true, paused: false, pen: [0, 0, 0], penSize: 2,
  drawing: null,     // ImageData at model size: what the pen draws on
  picture: null,     // ImageBitmap of an uploaded picture
  stream: null,      // MediaStream of the webcam
  chain: Promise.resolve(), // session.run calls, one at a time
  frames: [], lastModelMs: 0, translated: 0,
};

class PageError extends Error {}

function fail(message) {
  $("message").textContent = message;
  $("message").hidden = false;
  document.body.dataset.state = "error";
  $("status").textContent = "stopped";
}

function note(text) { $("note").textContent = text; }

// --- loading ---------------------------------------------------------------------------------------
async function fetchOk(url, what) {
  let response;
  try { response = await fetch(url); } catch (e) { throw new PageError(`cannot load ${what} (${url}): ${e.message}`); }
  if (!response.ok) throw new PageError(`cannot load ${what} (${url}): HTTP ${response.status}`);
  return response;
}

const canonical = (v) => (Array.isArray(v) ? `[${v.map(canonical).join(",")}]`
  : v && typeof v === "object" ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`
  : JSON.stringify(v));

async function loadContract() {
  let contract;
  try {
    contract = await (await fetchOk("model.json", "the model description")).json();
  } catch (e) {
    throw new PageError(`${e.message}. This folder was not made by p2p-export --web or p2p-web: build it with `
      + "p2p-export RUN --web DIR.");
  }
  if (contract.made_by !== "p2p-web") throw new PageError("model.json was not written by p2p: rebuild the folder with p2p-export RUN --web DIR.");
  return contract;
}

async function loadModelBytes(contract) {
  const response = await fetchOk(contract.model, "the model");
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    $("status").textContent = `loading the model… ${(got / 1e6).toFixed(1)}${total ? ` of ${(total / 1e6).toFixed(1)}` : ""} MB`;
  }
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

// The model must be a p2p model, and the one model.json describes: its spec is in its own metadata.
function checkModel(bytes, contract) {
  let props;
  try { props = metadataProps(bytes); } catch (e) {
    throw new PageError(`${contract.model} is not an ONNX model (${e.message}): export one with p2p-export RUN --web DIR.`);
  }
  const specText = props[contract.spec_key];
  if (specText === undefined) {
    throw new PageError(`${contract.model} is not a p2p model: it has no ${contract.spec_key} in its metadata. `
      + "Export a p2p-train checkpoint with p2p-export RUN --web DIR.");
  }
  let spec;
  try { spec = JSON.parse(specText); } catch { throw new PageError(`${contract.model}: its ${contract.spec_key} is not JSON.`); }
  if (canonical(spec) !== canonical(contract.spec)) {
    throw new PageError(`${contract.model} and model.json do not belong together (different specs): rebuild the folder with p2p-export RUN --web DIR.`);
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new PageError(`cannot load ${src}: the folder is incomplete; rebuild it with p2p-export RUN --web DIR.`));
    document.head.appendChild(s);
  });
}

async function hasWebGPU() {
  if (params.get("ep") === "wasm" || !navigator.gpu) return false;
  try { return Boolean(await navigator.gpu.requestAdapter()); } catch { return false; }
}

async function createSession(bytes, contract) {
  const webgpu = params.get("ep") !== "wasm" && (params.get("ep") === "webgpu" || await hasWebGPU());
  const files = contract.onnxruntime_web;
  await loadScript(`ort/${webgpu ? files.webgpu[0] : files.wasm[0]}`);
  const ort = window.ort;
  ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
  // threads need SharedArrayBuffer, which a cross-origin-isolated page has (p2p-web sends COOP + COEP)
  const threads = params.has("threads") ? Number(params.get("threads"))
    : crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
  const options = { graphOptimizationLevel: "all" };
  let session, ep = "wasm";
  if (webgpu) {
    try {
      session = await ort.InferenceSession.create(bytes, { ...options, executionProviders: ["webgpu"] });
      ep = "webgpu";
    } catch (e) {
      note(`WebGPU did not start (${e.message}); running on WebAssembly.`);
    }
  }
  if (!session) session = await ort.InferenceSession.create(bytes, { ...options, executionProviders: ["wasm"] });
  const want = [contract.input, ...contract.masks.map((m) => m.name)];
  if (canonical(session.inputNames) !== canonical(want) || canonical(session.outputNames) !== canonical([contract.output])) {
    throw new PageError(`${contract.model} has inputs ${session.inputNames.join(", ")} and outputs ${session.outputNames.join(", ")}, `
      + `not p2p's (${want.join(", ")} → ${contract.output}): re-export it with p2p-export.`);
  }
  state.ort = ort;
  state.ep = ep;
  state.threads = ep === "wasm" ? threads : 0;
  return session;
}

// --- running -------------------------------------------------------------------------------------
function maskShapes(width, height) {
  return state.contract.masks.map((m) => [1, m.channels, height / m.scale, width / m.scale]);
}

function run(x, masks, width, height) {
  const { contract, ort } = state;
  const go = async () => {
    const feeds = { [contract.input]: new ort.Tensor("float32", x, [1, contract.spec.in_channels, height, width]) };
    maskShapes(width, height).forEach((shape, k) => {
      feeds[contract.masks[k].name] = new ort.Tensor("float32", masks[k], shape);
    });
    const t0 = performance.now();
    const out = await state.session.run(feeds);
    state.lastModelMs = performance.now() - t0;
    return out[contract.output].data;
  };
  const result = state.chain.then(go, go);
  state.chain = result.catch(() => {});
  return result;
}

function sourcePixels() {
  const { width: w, height: h } = state;
  if (state.source === "draw") return state.drawing;
  const frame = state.source === "webcam" ? $("video") : state.picture;
  if (!frame) return null;
  const fw = frame.videoWidth || frame.width, fh = frame.videoHeight || frame.height;
  if (!fw || !fh) return null;
  // the middle of the frame at the model's aspect, scaled to the model's size
  const scale = Math.max(w / fw, h / fh);
  const cw = w / scale, ch = h / scale;
  const ctx = scratch(w, h);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(frame, (fw - cw) / 2, (fh - ch) / 2, cw, ch, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h);
}

let scratchCanvas = null;
function scratch(w, h) {
  if (!scratchCanvas) scratchCanvas = document.createElement("canvas");
  if (scratchCanvas.width !== w || scratchCanvas.height !== h) { scratchCanvas.width = w; scratchCanvas.height = h; }
  return scratchCanvas.getContext("2d", { willReadFrequently: true });
}

// a drawing for an edges model is its input already (black lines on white): no Canny on it
function drawnEdges(pixels, n) {
  const g = gray(pixels, n), x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = g[i] < 128 ? -1 : 1;
  return x;
}

async function translateFrame() {
  const { width: w, height: h, contract } = state;
  const pixels = sourcePixels();
  if (!pixels) return;
  const t0 = performance.now();
  const drawn = state.source === "draw";
  const x = drawn && contract.spec.task === "edges" ? drawnEdges(pixels.data, w * h) : inputTensor(pixels.data, w, h, contract);
  const masks = state.sampler.masks(state.noise, maskShapes(w, h), h, w);
  const y = await run(x, masks, w, h);
  if (w !== state.width || h !== state.height) return; // the size changed meanwhile
  if (!drawn) {
    const shown = new ImageData(w, h);
    inputPicture(x, w, h, contract, shown.data);
    $("input").getContext("2d").putImageData(shown, 0, 0);
  }
  const out = new ImageData(w, h);
  outputPicture(y, w, h, contract, x, out.data);
  $("output").getContext("2d").putImageData(out, 0, 0);
  state.translated += 1;
  const now = performance.now();
  state.frames.push(now);
  while (state.frames.length && state.frames[0] < now - 1000) state.frames.shift();
  const ms = now - t0;
  // translating continuously (webcam, per-frame noise): the rate measured; else the rate one frame's time allows
  const rate = isLive() && state.frames.length > 1 ? `${state.frames.length} frames/s` : `≈ ${(1000 / ms).toFixed(1)} frames/s`;
  $("fps").textContent = `· ${rate} · ${ms.toFixed(0)} ms a frame (model ${state.lastModelMs.toFixed(0)} ms)`;
}

const isLive = () => state.source === "webcam" || state.noise === "per-frame";

async function loop() {
  for (;;) {
    await new Promise((r) => requestAnimationFrame(r));
    if (state.paused || (!isLive() && !state.dirty)) continue;
    state.dirty = false;
    try { await translateFrame(); } catch (e) { fail(`translation failed: ${e.message}`); return; }
  }
}

// --- drawing -------------------------------------------------------------------------------------
function blankDrawing() {
  const { width: w, height: h } = state;
  const img = new ImageData(w, h);
  const fill = state.contract.palette.length ? state.contract.palette[0].rgb : [255, 255, 255];
  for (let i = 0; i < w * h; i++) img.data.set([...fill, 255], 4 * i);
  return img;
}

// a round pen stamped pixel by pixel: exact colours (no antialiasing), as label maps and edge maps are
function stamp(cx, cy) {
  const img = state.drawing, r = state.penSize / 2;
  const [red, green, blue] = state.pen;
  for (let y = Math.floor(cy - r); y <= Math.ceil(cy + r); y++) {
    for (let x = Math.floor(cx - r); x <= Math.ceil(cx + r); x++) {
      if (x < 0 || y < 0 || x >= img.width || y >= img.height) continue;
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > Math.max(r * r, 0.5)) continue;
      const k = 4 * (y * img.width + x);
      img.data[k] = red; img.data[k + 1] = green; img.data[k + 2] = blue; img.data[k + 3] = 255;
    }
  }
}

function strokeTo(from, to) {
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) * 2));
  for (let s = 0; s <= steps; s++) stamp(from[0] + (to[0] - from[0]) * s / steps, from[1] + (to[1] - from[1]) * s / steps);
  $("input").getContext("2d").putImageData(state.drawing, 0, 0);
  state.dirty = true;
}

function setupDrawing() {
  const canvas = $("input");
  let last = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    if (state.source !== "draw") selectSource("draw");
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
    strokeTo(last, last);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = at(e);
    strokeTo(last, p);
    last = p;
  });
  const end = () => { last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    state.drawing = blankDrawing();
    if (state.source === "draw") canvas.getContext("2d").putImageData(state.drawing, 0, 0);
    state.dirty = true;
  });
  $("size").addEventListener("input", (e) => { state.penSize = Number(e.target.value); });
  $("colour").addEventListener("input", (e) => {
    const v = e.target.value;
    setPen([1, 3, 5].map((i) => parseInt(v.slice(i, i + 2), 16)));
  });
}

function penColours() {
  const { contract } = state;
  if (contract.palette.length) return contract.palette;
  if (contract.spec.task === "edges") return [{ name: "pen", rgb: [0, 0, 0] }, { name: "eraser", rgb: [255, 255, 255] }];
  return [{ name: "black", rgb: [0, 0, 0] }, { name: "grey", rgb: [128, 128, 128] }, { name: "white", rgb: [255, 255, 255] }];
}

function setPen(rgb) {
  state.pen = rgb;
  for (const b of $("colours").children) b.classList.toggle("on", canonical(b.rgb) === canonical(rgb));
}

function setupPen() {
  const colours = penColours();
  for (const { name, rgb } of colours) {
    const b = document.createElement("button");
    b.type = "button";
    b.title = name;
    b.rgb = rgb;
    b.style.background = `rgb(${rgb.join(",")})`;
    b.addEventListener("click", () => setPen(rgb));
    $("colours").appendChild(b);
  }
  $("colour").hidden = state.contract.spec.task === "edges";
  setPen(colours[state.contract.palette.length ? 1 % colours.length : 0].rgb);
  state.penSize = Math.max(1, Math.round(Math.min(state.width, state.height) / (state.contract.palette.length ? 16 : 128)));
  $("size").value = state.penSize;
}

// --- sources -------------------------------------------------------------------------------------
async function selectSource(source) {
  if (source !== "webcam" && state.stream) {
    state.stream.getTracks().forEach((t) => t.stop());
    state.stream = null;
  }
  if (source === "upload" && !state.picture) { $("file").click(); return setRadio("source", state.source); }
  if (source === "webcam") {
    if (!navigator.mediaDevices?.getUserMedia) {
      note("This browser offers no camera here: the webcam needs https or localhost.");
      return setRadio("source", state.source);
    }
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      note(e.name === "NotAllowedError" ? "The camera was not allowed: allow it in the browser to use the webcam."
        : e.name === "NotFoundError" ? "No camera found." : `The camera did not start: ${e.message}`);
      return setRadio("source", state.source);
    }
    $("video").srcObject = state.stream;
    await $("video").play();
  }
  if (source === "draw") {
    // draw over what the model saw last (the edges of a photo, say): start from the input pane
    const w = state.width, h = state.height;
    if (state.source !== "draw") state.drawing = $("input").getContext("2d").getImageData(0, 0, w, h);
    $("input").getContext("2d").putImageData(state.drawing, 0, 0);
  }
  state.source = source;
  setRadio("source", source);
  $("input-caption").textContent = source === "draw" ? "input: draw here" : `input (${inputKind()})`;
  state.dirty = true;
}

function inputKind() {
  const task = state.contract.spec.task;
  return task === "edges" ? "its Canny edges, as the model sees them" : task === "colorize" ? "its lightness L, as the model sees it" : "as the model sees it";
}

function setRadio(name, value) {
  for (const r of document.querySelectorAll(`input[name=${name}]`)) r.checked = r.value === value;
}

function setupSources() {
  for (const r of document.querySelectorAll("input[name=source]")) r.addEventListener("change", () => selectSource(r.value));
  $("pick").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", async () => {
    const file = $("file").files[0];
    if (!file) return;
    try { state.picture = await createImageBitmap(file); } catch {
      note(`${file.name} is not a picture this browser can read.`);
      return;
    }
    selectSource("upload");
  });
}

// --- noise and size --------------------------------------------------------------------------------
function setupNoise() {
  const seed = params.has("seed") ? Number(params.get("seed")) : crypto.getRandomValues(new Uint32Array(1))[0];
  state.sampler = new MaskSampler(state.contract.spec.dropout_p, seed);
  $("seed").value = state.sampler.seed;
  setRadio("noise", state.noise);
  for (const r of document.querySelectorAll("input[name=noise]")) {
    r.addEventListener("change", () => { state.noise = r.value; state.dirty = true; });
  }
  $("seed").addEventListener("change", () => { state.sampler.setSeed(Number($("seed").value)); state.dirty = true; });
  $("reseed").addEventListener("click", () => {
    state.sampler.setSeed(crypto.getRandomValues(new Uint32Array(1))[0]);
    $("seed").value = state.sampler.seed;
    state.dirty = true;
  });
  $("pause").addEventListener("change", () => { state.paused = $("pause").checked; state.dirty = true; });
}

function parseSize(text) {
  const m = /^(\d+)(?:x(\d+))?$/.exec(text || "");
  return m ? [Number(m[1]), Number(m[2] || m[1])] : null;
}

function setSize(w, h) {
  const m = state.contract.multiple;
  if (w % m || h % m || w <= 0 || h <= 0) { note(`size ${w}x${h} is not accepted: width and height must be multiples of ${m}.`); return; }
  state.width = w; state.height = h;
  const display = Math.max(384, Math.min(512, Math.max(w, h)));  // CSS pixels of the longer side
  for (const id of ["input", "output"]) {
    const c = $(id);
    c.width = w; c.height = h;
    c.style.width = `${Math.round(display * w / Math.max(w, h))}px`; // the height follows the aspect (CSS)
  }
  state.drawing = blankDrawing();
  if (state.source === "draw") $("input").getContext("2d").putImageData(state.drawing, 0, 0);
  state.dirty = true;
}

function setupSize() {
  const { contract } = state;
  const [w0, h0] = parseSize(params.get("size")) || [contract.width, contract.height];
  const choices = [[contract.width, contract.height], [2 * contract.width, 2 * contract.height], [w0, h0]];
  const select = $("model-size");
  for (const [w, h] of choices) {
    if ([...select.options].some((o) => o.value === `${w}x${h}`)) continue;
    select.add(new Option(`${w}×${h}${w === contract.width && h === contract.height ? " (trained)" : ""}`, `${w}x${h}`));
  }
  select.value = `${w0}x${h0}`;
  select.addEventListener("change", () => setSize(...parseSize(select.value)));
  setSize(w0, h0);
}

// --- test hook: fixed tensors in, tensors out (tests/test_web.py) ------------------------------------------
const toB64 = (u8) => { let s = ""; for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000)); return btoa(s); };
const fromB64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const f32 = (b64) => new Float32Array(fromB64(b64).buffer);
const bytesOf = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function testHook(ready) {
  return {
    ready,
    info: () => ({ ep: state.ep, threads: state.threads, isolated: crossOriginIsolated, cores: navigator.hardwareConcurrency, width: state.width,
      height: state.height, translated: state.translated, version: state.ort?.env.versions?.web }),
    pause(on) { state.paused = on; $("pause").checked = on; },
    async run(inputB64, maskB64s, width, height) {
      const y = await run(f32(inputB64), maskB64s.map(f32), width, height);
      return toB64(bytesOf(y));
    },
    // every mask of `frames` successive draws, concatenated, as the page's sampler draws them
    masks(seed, mode, width, height, frames) {
      const sampler = new MaskSampler(state.contract.spec.dropout_p, seed);
      const parts = [];
      for (let f = 0; f < frames; f++) parts.push(...sampler.masks(mode, maskShapes(width, height), height, width));
      const all = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
      let at = 0;
      for (const p of parts) { all.set(bytesOf(p), at); at += p.byteLength; }
      return toB64(all);
    },
    canny(grayB64, width, height, low, high) { return toB64(canny(fromB64(grayB64), width, height, low, high)); },
    // RGBA of a model output as the page shows it (colorize: merged with the input x's lightness)
    picture(yB64, xB64, width, height) {
      const rgba = new Uint8ClampedArray(4 * width * height);
      return toB64(outputPicture(f32(yB64), width, height, state.contract, f32(xB64), rgba));
    },
    // model input from RGBA pixels through the page's input adapter
    adapt(rgbaB64, width, height) { return toB64(bytesOf(inputTensor(fromB64(rgbaB64), width, height, state.contract))); },
    // milliseconds per frame of the page's own work besides the model: a per-frame mask draw, the input adapter
    benchParts(width, height, count) {
      const shapes = maskShapes(width, height), sampler = new MaskSampler(state.contract.spec.dropout_p, 1);
      const rgba = new Uint8ClampedArray(4 * width * height).map((_, i) => (i * 2654435761) >>> 24);
      sampler.masks("per-frame", shapes, height, width); // compiled before it is timed
      inputTensor(rgba, width, height, state.contract);
      let t0 = performance.now();
      for (let i = 0; i < count; i++) sampler.masks("per-frame", shapes, height, width);
      const masksMs = (performance.now() - t0) / count;
      t0 = performance.now();
      for (let i = 0; i < count; i++) inputTensor(rgba, width, height, state.contract);
      return { masks_ms: masksMs, adapter_ms: (performance.now() - t0) / count };
    },
    // milliseconds of `count` session runs at width×height (noise off) after `warmupMs` of runs
    async bench(width, height, warmupMs, count) {
      const x = new Float32Array(state.contract.spec.in_channels * width * height).fill(0.1);
      const masks = state.sampler.masks("off", maskShapes(width, height), height, width);
      const start = performance.now();
      while (performance.now() - start < warmupMs) await run(x, masks, width, height);
      const times = [];
      for (let i = 0; i < count; i++) {
        const t0 = performance.now();
        await run(x, masks, width, height);
        times.push(performance.now() - t0);
      }
      return times;
    },
  };
}

async function main() {
  state.contract = await loadContract();
  const { contract } = state;
  const spec = contract.spec;
  const task = spec.task === "edges" ? "edges→photo" : spec.task === "colorize" ? "colorisation (L→ab)" : `paired (${spec.direction})`;
  $("title").textContent = `${contract.name}: ${task}, ${spec.generator} ngf ${spec.ngf}, trained at ${contract.width}×${contract.height}`;
  const bytes = await loadModelBytes(contract);
  checkModel(bytes, contract);
  $("status").textContent = "starting onnxruntime-web…";
  state.session = await createSession(bytes, contract);
  setupSize();
  setupNoise();
  setupPen();
  setupDrawing();
  setupSources();
  selectSource("draw");
  $("runtime").textContent = `onnxruntime-web ${state.ort.env.versions?.web ?? ""}`;
  const where = state.ep === "webgpu" ? "WebGPU"
    : `WebAssembly (SIMD, ${state.threads} thread${state.threads === 1 ? "" : "s"}${crossOriginIsolated ? "" : "; one because the page is not cross-origin isolated"})`;
  $("status").textContent = `${where} · ${(bytes.length / 1e6).toFixed(1)} MB model (${contract.precision}${contract.weights === "fp16" ? ", weights stored as fp16" : ""})`;
  document.body.dataset.state = "ready";
  loop();
}

const ready = main().then(() => testHook(null).info(), (e) => {
  fail(e instanceof PageError ? e.message : `the page failed: ${e.message}`);
  throw e;
});
ready.catch(() => {});
window.p2pTest = testHook(ready);
