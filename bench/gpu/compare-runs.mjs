// Two training runs' outputs compared (bench/gpu/multi.sh: 1 rank against N ranks over NCCL):
// per-step loss and gradient norm (relative difference; GRPO's first-iteration loss, ~0 by
// construction, absolute), completions.jsonl where both have it (token for token), and the weights of
// the last checkpoint (largest ||a - b|| / ||a|| over the tensors). Prints the figures; exits 1 when
// one exceeds --tol (default 1e-5).
//   node bench/gpu/compare-runs.mjs <run dir A> <run dir B> [--tol 1e-5]
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const [a, b] = process.argv.slice(2, 4);
const ti = process.argv.indexOf('--tol');
const tol = ti > 0 ? Number(process.argv[ti + 1]) : 1e-5;
if (!a || !b) {
  console.error('usage: node bench/gpu/compare-runs.mjs <run dir A> <run dir B> [--tol 1e-5]');
  process.exit(2);
}

const metrics = (dir) => readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const rel = (x, y) => Math.abs(x - y) / Math.max(Math.abs(x), Math.abs(y), 1e-30);

// A safetensors file's F32 tensors (the format: u64 header length, JSON header, data).
function tensors(file) {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`${file}: ${name} is ${t.dtype}; compare-runs reads F32 checkpoints (train with dtype fp32 or masters)`);
    const [s, e] = t.data_offsets;
    const bytes = buf.subarray(8 + n + s, 8 + n + e);
    out.set(name, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  return out;
}

const lastCheckpoint = (dir) => readdirSync(dir).filter((d) => /^checkpoint-\d+$/.test(d)).sort((x, y) => Number(x.slice(11)) - Number(y.slice(11))).at(-1);

let worst = 0;
const ma = metrics(a), mb = metrics(b);
if (ma.length !== mb.length) throw new Error(`${a} logged ${ma.length} steps, ${b} ${mb.length}`);
ma.forEach((x, i) => {
  const y = mb[i];
  const dl = Math.abs(x.loss) < 1e-3 ? Math.abs(x.loss - y.loss) : rel(x.loss, y.loss);
  const dg = rel(x.grad_norm, y.grad_norm);
  worst = Math.max(worst, dl, dg);
  console.log(`step ${x.step}: loss ${x.loss} vs ${y.loss} (${dl.toExponential(1)}), grad_norm ${dg.toExponential(1)}`);
});
const ca = path.join(a, 'completions.jsonl'), cb = path.join(b, 'completions.jsonl');
if (existsSync(ca) && existsSync(cb)) {
  const same = readFileSync(ca, 'utf8') === readFileSync(cb, 'utf8');
  console.log(`completions: ${same ? 'identical' : 'DIFFERENT'}`);
  if (!same) worst = Infinity;
}
const ck = lastCheckpoint(a);
const wa = tensors(path.join(a, ck, 'model.safetensors')), wb = tensors(path.join(b, ck, 'model.safetensors'));
let wWorst = 0, wName = '';
for (const [name, x] of wa) {
  const y = wb.get(name);
  let d = 0, s = 0;
  for (let i = 0; i < x.length; i++) {
    d += (x[i] - y[i]) ** 2;
    s += x[i] ** 2;
  }
  const r = Math.sqrt(d) / Math.max(Math.sqrt(s), 1e-30);
  if (r > wWorst) [wWorst, wName] = [r, name];
}
worst = Math.max(worst, wWorst);
console.log(`weights (${ck}): worst tensor ${wName || '-'} ${wWorst.toExponential(2)} relative`);
console.log(`${worst <= tol ? 'SAME' : 'DIFFERENT'}: largest difference ${worst.toExponential(2)} (tolerance ${tol})`);
process.exit(worst <= tol ? 0 : 1);
