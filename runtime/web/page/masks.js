// Dropout masks drawn exactly as p2p's runtime draws them with numpy (runtime/masks.py, runtime/contract.py):
//   per-frame: rng = default_rng(seed), one draw after another;   fixed: default_rng([seed, H, W]), one draw;
//   each mask = rng.random(shape, dtype=float32) >= p ? 1/(1-p) : 0, in C order, masks in input order.
// default_rng is PCG64 seeded through SeedSequence; random(float32) takes 32-bit halves of its 64-bit
// outputs (low half first) and keeps the top 24 bits. Ported here with 32-bit integer maths for the
// seeding and BigInt for the 128-bit generator, so a seed gives the same bytes as numpy.

// --- numpy.random.SeedSequence (pool of 4 words; no spawn key) ---------------------------------------
const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715, XSHIFT = 16, POOL_SIZE = 4;

function uint32Words(value) {
  // an entropy value as numpy's _coerce_to_uint32_array: non-negative ints as little-endian 32-bit words
  if (Array.isArray(value)) return value.flatMap(uint32Words);
  let n = BigInt(value);
  if (n < 0n) throw new Error("seeds must be non-negative");
  const words = [];
  do { words.push(Number(n & 0xffffffffn)); n >>= 32n; } while (n > 0n);
  return words;
}

function seedPool(entropy) {
  const words = uint32Words(entropy);
  let hashConst = INIT_A;
  const hashmix = (value) => {
    value = (value ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_A) >>> 0;
    value = Math.imul(value, hashConst) >>> 0;
    return (value ^ (value >>> XSHIFT)) >>> 0;
  };
  const mix = (x, y) => {
    const r = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
    return (r ^ (r >>> XSHIFT)) >>> 0;
  };
  const pool = [];
  for (let i = 0; i < POOL_SIZE; i++) pool.push(hashmix(i < words.length ? words[i] : 0));
  for (let src = 0; src < POOL_SIZE; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    }
  }
  for (let src = POOL_SIZE; src < words.length; src++) {
    for (let dst = 0; dst < POOL_SIZE; dst++) pool[dst] = mix(pool[dst], hashmix(words[src]));
  }
  return pool;
}

function generateState(pool, nWords) {
  let hashConst = INIT_B;
  const state = [];
  for (let i = 0; i < nWords; i++) {
    let v = (pool[i % POOL_SIZE] ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_B) >>> 0;
    v = Math.imul(v, hashConst) >>> 0;
    state.push((v ^ (v >>> XSHIFT)) >>> 0);
  }
  return state;
}

// --- numpy.random.PCG64 (XSL-RR 128/64) --------------------------------------------------------------
const M128 = (1n << 128n) - 1n;
const PCG_MULT = (2549297995355413924n << 64n) + 4865540595714422341n;

export class PCG64 {
  constructor(entropy) {
    // generate_state(4, uint64): pairs of 32-bit words, low word first; seed = (s0 << 64) | s1, inc likewise
    const w = generateState(seedPool(entropy), 8).map(BigInt);
    const u64 = (k) => w[2 * k] | (w[2 * k + 1] << 32n);
    const seed = (u64(0) << 64n) | u64(1);
    const inc = (u64(2) << 64n) | u64(3);
    this.inc = ((inc << 1n) | 1n) & M128;
    this.state = 0n;
    this.step();
    this.state = (this.state + seed) & M128;
    this.step();
    this.spare = null; // the high half of the last 64-bit output, served by the next 32-bit draw
  }

  step() { this.state = (this.state * PCG_MULT + this.inc) & M128; }

  next64() {
    this.step();
    const hi = this.state >> 64n, lo = this.state & 0xffffffffffffffffn;
    const x = hi ^ lo, rot = hi >> 58n;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & 0xffffffffffffffffn;
  }

  next32() {
    if (this.spare !== null) { const v = this.spare; this.spare = null; return v; }
    const v = this.next64();
    this.spare = Number(v >> 32n);
    return Number(v & 0xffffffffn);
  }

  // rng.random(n, dtype=float32): (next32 >> 8) / 2^24, exactly representable
  randomFloat32(n) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.next32() >>> 8) / 16777216;
    return out;
  }
}

// --- the contract's masks -----------------------------------------------------------------------------
export function keepMask(uniform, p) {
  const scale = Math.fround(1 / (1 - p));
  const mask = new Float32Array(uniform.length);
  for (let i = 0; i < uniform.length; i++) mask[i] = uniform[i] >= Math.fround(p) ? scale : 0;
  return mask;
}

// shapes: [[N, C, h, w], ...] from model.json's mask rule
export function drawMasks(rng, shapes, p) {
  return shapes.map((s) => keepMask(rng.randomFloat32(s.reduce((a, b) => a * b, 1)), p));
}

export function onesMasks(shapes) {
  return shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b, 1)).fill(1));
}

// MaskSampler's modes: per-frame (one generator for the session), fixed (one draw per size), off
export class MaskSampler {
  constructor(p, seed) { this.p = p; this.setSeed(seed); }

  setSeed(seed) {
    this.seed = seed >>> 0;
    this.rng = new PCG64(this.seed);
    this.cache = new Map();
  }

  masks(mode, shapes, height, width) {
    if (mode === "per-frame") return drawMasks(this.rng, shapes, this.p);
    const key = `${mode}:${height}x${width}:${shapes.map((s) => s.join("x")).join(",")}`;
    if (!this.cache.has(key)) {
      // fixed: one batch-1 draw from (seed, H, W), the same whatever came before (batch is 1 in the page)
      this.cache.set(key, mode === "off" ? onesMasks(shapes)
        : drawMasks(new PCG64([this.seed, height, width]), shapes, this.p));
    }
    return this.cache.get(key);
  }
}
