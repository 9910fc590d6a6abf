// The backend parity tests (test/gpu/parity.mjs) without vitest, for the GPU machine (Node, no npm
// registry): needs dist/ (npm run build:ts) and a CUDA build in build/Release. Prints one line per
// case and `N passed, N failed`; exits 1 on any failure, 0 when every case passed or when there is
// no GPU to run on (it then says why and runs nothing).
//   node bench/gpu/parity.mjs [filter]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// dist/model.js, not dist/index.js: its imports are the few packages prepare.sh carries.
const { native, createNativeTrainer } = await import(path.join(root, 'dist', 'native', 'binding.js'));
const { loadModel, internals } = await import(path.join(root, 'dist', 'model.js'));
const { gpuStatus, opCases, backwardCases, modelCases } = await import(path.join(root, 'test', 'gpu', 'parity.mjs'));
const { trainingCases } = await import(path.join(root, 'test', 'gpu', 'training-cases.mjs'));

const FIXTURES = path.join(root, 'test', 'reference', 'fixtures');
const MODELS = ['mha_f32', 'gqa_f32', 'gqa_bf16', 'mha_f16'];

// As test/helpers/fixtures.ts reads them.
function logitsCases(model) {
  const dir = path.join(FIXTURES, model);
  const spec = JSON.parse(readFileSync(path.join(dir, 'expected.json'), 'utf8'));
  return spec.cases.map((c) => {
    const buf = readFileSync(path.join(dir, c.logits));
    return { ...c, logits: new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)) };
  });
}

const n = native();
const status = gpuStatus(n);
if (!status.ok) {
  console.log(`parity: skipped: ${status.reason}`);
  console.log('0 passed, 0 failed');
  process.exit(0);
}
console.log(`parity: ${status.reason}; ${n.backends.join(', ')}; CUDA runtime ${n.cuda.runtimeVersion}`);
const filter = process.argv[2] ? new RegExp(process.argv[2]) : null;
const ctx = {
  loadModel, fixtures: FIXTURES, models: MODELS, logitsCases, engineOf: (m) => internals.get(m).engine, createTrainer: createNativeTrainer,
};
const cases = [...opCases(), ...backwardCases(), ...modelCases(ctx), ...trainingCases(ctx)].filter((c) => !filter || filter.test(c.name));
let passed = 0, failed = 0;
for (const c of cases) {
  const t0 = performance.now();
  try {
    const r = (await c.run(n)) ?? {};
    const show = (v) => (typeof v === 'number' ? v.toExponential(2) : typeof v === 'object' ? `{${Object.entries(v).map(([k, x]) => `${k} ${show(x)}`).join(', ')}}` : v);
    const detail = Object.entries(r).map(([k, v]) => `${k} ${show(v)}`).join(', ');
    console.log(`PASS ${c.name}${detail ? ` (${detail})` : ''} ${(performance.now() - t0).toFixed(0)} ms`);
    passed++;
  } catch (err) {
    console.log(`FAIL ${c.name}: ${err.message}`);
    failed++;
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
