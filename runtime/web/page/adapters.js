// The task adapters of runtime/images.py, in the page: frame → model input, model output → picture.
// Pictures are canvas ImageData (RGBA); tensors are CHW Float32Arrays in [-1, 1].

// cv2.cvtColor(BGR2GRAY) on uint8: fixed point, 15 bits (matches OpenCV 5 on every colour tested)
export function gray(rgba, count) {
  const out = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    const k = 4 * i;
    out[i] = (rgba[k] * 9798 + rgba[k + 1] * 19235 + rgba[k + 2] * 3735 + 16384) >> 15;
  }
  return out;
}

// cv2.Canny(gray, low, high) with its defaults (3×3 Sobel, L1 gradient): the same algorithm and integer
// arithmetic as OpenCV's canny.cpp: Sobel with replicated borders, |dx|+|dy|, non-maximum suppression
// along 4 directions (tan 22.5° in 15-bit fixed point), hysteresis over 8-neighbours. 255 = edge.
const CANNY_SHIFT = 15;
const TG22 = Math.floor(0.4142135623730950488016887242097 * (1 << CANNY_SHIFT) + 0.5);

export function canny(src, width, height, low, high) {
  const w = width, h = height;
  // the image with a replicated border of one pixel (Sobel's BORDER_REPLICATE)
  const pw = w + 2, pad = new Int32Array(pw * (h + 2));
  for (let y = -1; y <= h; y++) {
    const sy = Math.min(h - 1, Math.max(0, y));
    for (let x = -1; x <= w; x++) pad[(y + 1) * pw + x + 1] = src[sy * w + Math.min(w - 1, Math.max(0, x))];
  }
  const dx = new Int32Array(w * h), dy = new Int32Array(w * h);
  // magnitude with a zero border of one pixel all round (rows and columns outside the image)
  const mw = w + 2;
  const mag = new Int32Array(mw * (h + 2));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const j = (y + 1) * pw + x + 1;
      const a = pad[j - pw - 1], b = pad[j - pw], c = pad[j - pw + 1], d = pad[j - 1], f = pad[j + 1];
      const g = pad[j + pw - 1], k = pad[j + pw], l = pad[j + pw + 1];
      const gx = (c + 2 * f + l) - (a + 2 * d + g);
      const gy = (g + 2 * k + l) - (a + 2 * b + c);
      dx[y * w + x] = gx;
      dy[y * w + x] = gy;
      mag[(y + 1) * mw + x + 1] = Math.abs(gx) + Math.abs(gy);
    }
  }
  const lo = Math.floor(low), hi = Math.floor(high);
  // map: 0 = may be an edge (weak), 1 = not an edge, 2 = edge; one pixel of 1 all round
  const map = new Uint8Array(mw * (h + 2)).fill(1);
  const stack = [];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const j = (y + 1) * mw + x + 1;
      const m = mag[j];
      let peak = false;
      if (m > lo) {
        const xs = dx[y * w + x], ys = dy[y * w + x];
        const ax = Math.abs(xs), ay = Math.abs(ys) * (1 << CANNY_SHIFT);
        const tg22x = ax * TG22;
        if (ay < tg22x) {
          peak = m > mag[j - 1] && m >= mag[j + 1];
        } else {
          const tg67x = tg22x + ax * (1 << (CANNY_SHIFT + 1));
          if (ay > tg67x) {
            peak = m > mag[j - mw] && m >= mag[j + mw];
          } else {
            const s = (xs < 0) !== (ys < 0) ? -1 : 1;
            peak = m > mag[j - mw - s] && m > mag[j + mw + s];
          }
        }
      }
      if (!peak) continue;
      if (m > hi) { map[j] = 2; stack.push(j); } else map[j] = 0;
    }
  }
  const steps = [-mw - 1, -mw, -mw + 1, -1, 1, mw - 1, mw, mw + 1];
  while (stack.length) {
    const j = stack.pop();
    for (const s of steps) {
      if (map[j + s] === 0) { map[j + s] = 2; stack.push(j + s); }
    }
  }
  const out = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) out[y * w + x] = map[(y + 1) * mw + x + 1] === 2 ? 255 : 0;
  }
  return out;
}

// --- CIE Lab, as cv2.cvtColor(float32 BGR in [0, 1], BGR2Lab / Lab2BGR): sRGB gamma, D65 white ---------
const srgbToLinear = (c) => (c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4));
const linearToSrgb = (c) => (c <= 0.0031308 ? 12.92 * c : 1.055 * Math.pow(c, 1 / 2.4) - 0.055);
const XN = 0.950456, ZN = 1.088754;

export function lightness(r, g, b) {
  const y = 0.212671 * srgbToLinear(r) + 0.715160 * srgbToLinear(g) + 0.072169 * srgbToLinear(b);
  return y > 0.008856 ? 116 * Math.cbrt(y) - 16 : 903.3 * y;
}

export function labToRgb(L, a, b) {
  const fy = (L + 16) / 116;
  const linear = L <= 7.9996248; // OpenCV's threshold: 0.008856 · 903.3
  const y = linear ? L / 903.3 : fy * fy * fy;
  const fyy = linear ? 7.787 * y + 16 / 116 : fy;
  const fx = fyy + a / 500, fz = fyy - b / 200;
  const inv = (f) => (f > 0.206893 ? f * f * f : (f - 16 / 116) / 7.787);
  const x = XN * inv(fx), z = ZN * inv(fz);
  const rl = 3.240479 * x - 1.53715 * y - 0.498535 * z;
  const gl = -0.969256 * x + 1.875991 * y + 0.041556 * z;
  const bl = 0.055648 * x - 0.204043 * y + 1.057311 * z;
  return [linearToSrgb(rl), linearToSrgb(gl), linearToSrgb(bl)];
}

// Lab scaling of runtime/images.py: L in [0, 100] → [-1, 1]; a, b in about [-110, 110] → [-1, 1]
export const L_SCALE = 50, AB_SCALE = 110;

// --- frame (RGBA at model size) → model input, CHW in [-1, 1] ---------------------------------------
export function inputTensor(rgba, width, height, contract) {
  const spec = contract.spec, n = width * height;
  if (spec.task === "edges") {
    const edges = canny(gray(rgba, n), width, height, spec.canny_low, spec.canny_high);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = (255 - edges[i]) / 127.5 - 1;
    return x;
  }
  if (spec.task === "colorize") {
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const k = 4 * i;
      x[i] = lightness(rgba[k] / 255, rgba[k + 1] / 255, rgba[k + 2] / 255) / L_SCALE - 1;
    }
    return x;
  }
  const c = spec.in_channels, x = new Float32Array(c * n);
  const order = spec.channel_order === "RGB" ? [0, 1, 2] : [2, 1, 0];
  for (let ch = 0; ch < c; ch++) {
    const src = order[ch];
    for (let i = 0; i < n; i++) x[ch * n + i] = rgba[4 * i + src] / 127.5 - 1;
  }
  return x;
}

// --- model input → a picture of it (what the model sees) --------------------------------------------
export function inputPicture(x, width, height, contract, rgba) {
  const n = width * height;
  if (contract.spec.in_channels === 1) {
    for (let i = 0; i < n; i++) {
      const v = clamp8((x[i] + 1) * 127.5 + 0.5);
      rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = v;
      rgba[4 * i + 3] = 255;
    }
    return rgba;
  }
  return outputPicture(x, width, height, { spec: { ...contract.spec, task: "paired", out_channels: contract.spec.in_channels } }, null, rgba);
}

// --- model output → RGBA; colorize merges the predicted ab with the input's L (images.output_to_bgr) ---
export function outputPicture(y, width, height, contract, x, rgba) {
  const spec = contract.spec, n = width * height;
  if (spec.task === "colorize") {
    for (let i = 0; i < n; i++) {
      const rgb = labToRgb((x[i] + 1) * L_SCALE, y[i] * AB_SCALE, y[n + i] * AB_SCALE);
      for (let ch = 0; ch < 3; ch++) rgba[4 * i + ch] = clamp8(rgb[ch] * 255 + 0.5);
      rgba[4 * i + 3] = 255;
    }
    return rgba;
  }
  const c = spec.out_channels;
  const order = spec.channel_order === "RGB" ? [0, 1, 2] : [2, 1, 0];
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < 3; ch++) {
      const plane = c === 1 ? 0 : order[ch];
      rgba[4 * i + ch] = clamp8((y[plane * n + i] + 1) * 127.5 + 0.5);
    }
    rgba[4 * i + 3] = 255;
  }
  return rgba;
}

function clamp8(v) { return v < 0 ? 0 : v > 255 ? 255 : Math.floor(v); }
