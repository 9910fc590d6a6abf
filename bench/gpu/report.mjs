// Prints the table of bench/gpu/check.sh from the two JSON files: justgrpo's engine (bench.mjs) and
// PyTorch eager (torch_bench.py) on the same card, with ratios, achieved TFLOP/s against the card's
// bf16 peak (measured by a large PyTorch GEMM, and the datasheet's), the roofline numbers of each
// forward call, and the issue's goals marked met or missed.
//   node bench/gpu/report.mjs engine.json torch.json
import { readFileSync } from 'node:fs';

import { PRESETS, datasheetFor, forwardBytes, forwardFlops, numParams } from './shapes.mjs';

const [engineFile, torchFile] = process.argv.slice(2);
const read = (f) => {
  try {
    return JSON.parse(readFileSync(f, 'utf8'));
  } catch (err) {
    console.log(`(no ${f}: ${err.message.split('\n')[0]})`);
    return null;
  }
};
const E = read(engineFile), P = read(torchFile);
const preset = E?.preset ?? P?.preset ?? 'llada8b';
const p = PRESETS[preset];
const sheet = datasheetFor(P?.device_name ?? '');
const peak = P?.gemm_tflops;

const fmt = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? '-' : x.toFixed(d));
const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}x` : '-');
const pct = (t, of) => (t && of ? `${((100 * t) / of).toFixed(0)}%` : '-');

console.log(`justgrpo vs PyTorch eager, ${preset} shapes (${(numParams(p) / 1e9).toFixed(2)}B params, bf16 weights, random)`);
console.log(`card: ${P?.device_name ?? '?'}; torch ${P?.torch ?? '?'}; bf16 GEMM peak measured (PyTorch, ${P?.gemm_n ?? '?'}^3): ${fmt(peak, 0)} TFLOP/s; datasheet: ${sheet ? sheet.bf16 : '?'} TFLOP/s, HBM ${sheet ? sheet.hbm : '?'} TB/s`);
console.log(`engine: ${E?.native?.path ?? '?'} (${E?.native?.backends?.join(', ') ?? '?'}), backend ${E?.backend ?? '?'}`);
console.log('');
const rows = [];
const header = ['workload', 'justgrpo', 'PyTorch', 'ratio', 'justgrpo TFLOP/s', '% measured peak', '% datasheet peak'];
for (const f of E?.forward ?? []) {
  const t = P?.forward?.find((x) => x.T === f.T && x.B === f.B);
  rows.push([`forward B ${f.B} T ${f.T} (tok/s)`, fmt(f.tokens_per_s), fmt(t?.tokens_per_s), ratio(f.tokens_per_s, t?.tokens_per_s),
    fmt(f.tflops, 1), pct(f.tflops, peak), pct(f.tflops, sheet?.bf16)]);
}
const labels = { ar: 'AR rollout', low_confidence: 'low_confidence', threshold: 'threshold 0.9' };
for (const [name, d] of Object.entries(E?.decode ?? {})) {
  const t = P?.decode?.[name];
  rows.push([`${labels[name] ?? name} G ${d.G} gen ${d.gen}${name === 'ar' ? '' : ` block ${d.block}`} (tok/s)`, fmt(d.tokens_per_s, 1),
    fmt(t?.tokens_per_s, 1), ratio(d.tokens_per_s, t?.tokens_per_s), fmt(d.tflops, 1), pct(d.tflops, peak), pct(d.tflops, sheet?.bf16)]);
}
// Training steps: time per step at the preset's layer count, extrapolated on both sides from the
// measured per-layer time, and stated as such; the ratio is PyTorch's time over ours.
for (const [name, d] of Object.entries(E?.train ?? {})) {
  if (!d || typeof d !== 'object' || d.s_per_step_extrapolated === undefined) continue;
  const t = P?.train?.[name];
  rows.push([`${name === 'sft' ? 'SFT' : 'JustGRPO'} step B ${d.B} T ${d.T} rows ${d.rows} (s, ${d.layers_extrapolated} layers from ${d.layers} measured)`,
    fmt(d.s_per_step_extrapolated, 2), fmt(t?.s_per_step_extrapolated, 2), ratio(t?.s_per_step_extrapolated, d.s_per_step_extrapolated),
    fmt(d.tflops, 1), pct(d.tflops, peak), pct(d.tflops, sheet?.bf16)]);
}
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
const line = (r) => `| ${r.map((c, i) => String(c).padEnd(widths[i])).join(' | ')} |`;
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of rows) console.log(line(r));

console.log('');
console.log('roofline per forward call (FLOPs counted as in shapes.mjs; bytes: weights once + activations in and out):');
for (const f of E?.forward ?? []) {
  const flops = forwardFlops(p, f.B * f.T, f.T, f.B), bytes = forwardBytes(p, f.B * f.T);
  const tCompute = sheet ? flops / (sheet.bf16 * 1e12) : NaN, tMemory = sheet ? bytes / (sheet.hbm * 1e12) : NaN;
  console.log(`  B ${f.B} T ${f.T}: ${(flops / 1e12).toFixed(1)} TFLOP, ${(bytes / 1e9).toFixed(1)} GB, ${(flops / bytes).toFixed(0)} FLOP/byte;` +
    ` at datasheet peak ${(tCompute * 1e3).toFixed(1)} ms compute vs ${(tMemory * 1e3).toFixed(1)} ms memory; measured ${(f.s * 1e3).toFixed(1)} ms`);
}

const f512 = E?.forward?.find((f) => f.T === 512), t512 = P?.forward?.find((f) => f.T === 512);
const ar = E?.decode?.ar, tar = P?.decode?.ar;
const goal = (ok, text) => console.log(`  [${ok === undefined ? '?' : ok ? 'met' : 'missed'}] ${text}`);
console.log('');
console.log('goals (issues #6 and #22, part 3):');
goal(f512 && t512 ? f512.tokens_per_s >= 1.3 * t512.tokens_per_s : undefined, `forward >= 1.3x PyTorch eager at T 512: ${ratio(f512?.tokens_per_s, t512?.tokens_per_s)}`);
goal(f512 && sheet ? f512.tflops >= 0.5 * sheet.bf16 : undefined, `forward >= 50% of bf16 peak at T 512: ${pct(f512?.tflops, sheet?.bf16)} of the datasheet, ${pct(f512?.tflops, peak)} of the measured GEMM`);
goal(ar && tar ? ar.tokens_per_s >= 2 * tar.tokens_per_s : undefined, `AR rollout >= 2x the PyTorch loop: ${ratio(ar?.tokens_per_s, tar?.tokens_per_s)}`);
for (const [name, label] of [['sft', 'SFT'], ['grpo', 'JustGRPO']]) {
  const e = E?.train?.[name]?.s_per_step_extrapolated, t = P?.train?.[name]?.s_per_step_extrapolated;
  goal(e && t ? t >= 1.3 * e : undefined, `${label} training step >= 1.3x PyTorch autocast (${p.layers} layers, extrapolated): ${ratio(t, e)}`);
}
