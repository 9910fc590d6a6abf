// One config's JustGRPO step, repeated, with its phases: `node bench/grpo-step.mjs tiny|small [CONFIG_JSON] [STEPS]`
// (e.g. '{"reuseRolloutMemoryMB":0}' to turn rollout reuse off). Step 0 includes first-time allocations.
import { LladaModel } from '../dist/index.js';
import { native } from '../dist/native/binding.js';
import { GRPOTrainer } from '../dist/train/grpo.js';
import { parseGrpoConfig } from '../dist/train/grpo-config.js';
import { CONFIGS, modelConfig } from './common.mjs';
const name = process.argv[2] ?? 'tiny';
const config = modelConfig(CONFIGS[name]);
const model = await LladaModel.random(config, { seed: 0 });
const extra = process.argv[3] ? JSON.parse(process.argv[3]) : {};
const cfg = parseGrpoConfig({ model: 'x', data: { train: 'x' }, numGenerations: 8, promptsPerStep: 1, maxCompletionLength: 32, learningRate: 1e-5, maxSteps: 1000, ...extra }, 'bench');
const trainer = await GRPOTrainer.create(model, cfg, { rewardFunctions: { parity: ({ completionIds }) => completionIds.map((ids) => ids.filter((x) => x % 2 === 0).length / ids.length) } });
const prompt = { ids: Array.from({ length: 32 }, (_, t) => (t * 7) % (config.vocabSize - 3)), text: '', columns: {}, source: '' };
const runs = Number(process.argv[4] ?? 3);
for (let s = 0; s <= runs; s++) {
  const ph = {}; let last = performance.now(), cur = null;
  native().opTimes(true); const pf0 = process.resourceUsage().minorPageFault;
  const m = await trainer.step([prompt], s, { onPhase: (p) => { const now = performance.now(); if (cur) ph[cur] = (ph[cur] ?? 0) + now - last; cur = p; last = now; } });
  ph[cur] = (ph[cur] ?? 0) + performance.now() - last;
  const ops = native().opTimes(false);
  console.log(s, m.step_time.toFixed(3), Object.entries(ph).map(([k, v]) => `${k} ${(v/1000).toFixed(3)}`).join(' '),
    `| gemm ${ops.gemm.toFixed(3)} s (${(ops.gemmFlops / ops.gemm / 1e9).toFixed(1)} GFLOP/s) attention ${ops.attention.toFixed(3)} faults ${process.resourceUsage().minorPageFault - pf0} other ${(m.step_time - ops.gemm - ops.attention).toFixed(3)}`);
}
