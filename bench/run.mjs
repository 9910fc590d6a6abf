// `npm run bench`: the engine next to the PyTorch reference of the same algorithm on this machine,
// in one run, as medians and ratios. Sections: forward pass, tokenizer, rewards (where built).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Benchmark from 'benchmark';

import { LladaModel, charTokenizerFiles, Tokenizer, toRawConfig } from '../dist/index.js';
import { benchModelConfig, runBench } from '../dist/bench.js';
import { native } from '../dist/native/binding.js';
import { maskedDiffusionBatch } from '../dist/train/objective.js';
import { Rng } from '../dist/train/rng.js';
import { GRPOTrainer } from '../dist/train/grpo.js';
import { parseGrpoConfig } from '../dist/train/grpo-config.js';
import { TrainingSession } from '../dist/train/session.js';
import { median, table, timeMedian, torchBest, torchPython } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes('--quick');
// `--configs small` (or tiny,small): the sections that run both configs run only these.
const configs = (() => {
  const i = process.argv.indexOf('--configs');
  return i < 0 ? null : process.argv[i + 1].split(',');
})();
const pick = (names) => (configs ? names.filter((n) => configs.includes(n)) : names);


async function benchForward(py) {
  console.log('\n## Forward pass, fp32 CPU (logits for every position)');
  const rows = [['config', 'tokens', 'ours tok/s', 'PyTorch tok/s', 'PyTorch threads', 'ratio', 'our GEMMs GFLOP/s', 'OpenBLAS sgemm GFLOP/s', 'GEMM efficiency']];
  const shapes = quick ? { tiny: [4, 64] } : { tiny: [8, 128], small: [4, 128] };
  for (const [name, [B, T]] of Object.entries(shapes)) {
    const config = benchModelConfig(name);
    const model = await LladaModel.random(config, { seed: 0 });
    const ids = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 31 + t * 17) % config.vocabSize));
    const runs = name === 'tiny' ? 10 : 5;
    const ours = (B * T) / (await timeMedian(() => model.logits(ids), runs));
    // The GEMMs' own rate: the FLOPs they ran (counted by the engine: layer 0's projections run
    // once per distinct token, fewer than the nominal shapes) over the time the native clocks saw
    // inside GEMM calls, against OpenBLAS's sgemm on the nominal shapes (numpy, 2 threads) in this run.
    const shapes = gemmShapes(config, B * T);
    native().opTimes(true);
    for (let i = 0; i < runs; i++) await model.logits(ids);
    const clocks = native().opTimes(false);
    const gemmRate = clocks.gemmFlops / clocks.gemm / 1e9;
    const blasRate = py ? sgemmRate(py, shapes, runs) : null;
    await model.dispose();
    let torchRate = 'n/a', setting = 'python3-torch not installed', ratio = 'n/a';
    if (py) {
      const t = torchBest(py, 'torch_forward.py', { config: toRawConfig(config), batch: B, seq: T, runs });
      torchRate = ((B * T) / t.median_s).toFixed(0);
      setting = t.setting;
      ratio = `${(ours / Number(torchRate)).toFixed(2)}x`;
    }
    rows.push([`${name} (d ${config.dModel}, ${config.nLayers} layers)`, `${B}x${T}`, ours.toFixed(0), torchRate, setting, ratio,
      gemmRate.toFixed(1), blasRate === null ? 'n/a' : blasRate.toFixed(1), blasRate === null ? 'n/a' : `${((100 * gemmRate) / blasRate).toFixed(0)}%`]);
  }
  table(rows);
}

/** The GEMMs of one forward over n tokens with logits at every row, as [M, K, N, count]. */
function gemmShapes(c, n) {
  const kv = c.nKvHeads * (c.dModel / c.nHeads);
  return [
    [n, c.dModel, c.dModel, 2 * c.nLayers], // q_proj, attn_out
    [n, c.dModel, kv, 2 * c.nLayers], // k_proj, v_proj
    [n, c.dModel, c.mlpHiddenSize, 2 * c.nLayers], // ff_proj, up_proj
    [n, c.mlpHiddenSize, c.dModel, c.nLayers], // ff_out
    [n, c.dModel, c.vocabSize, 1], // the LM head
  ];
}

function sgemmRate(py, shapes, runs) {
  const r = spawnSync(py, [path.join(here, 'sgemm.py'), JSON.stringify({ shapes, runs })], {
    encoding: 'utf8', env: { ...process.env, OPENBLAS_NUM_THREADS: '2' },
  });
  if (r.status !== 0) throw new Error(`sgemm.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()).gflops;
}

async function benchDecode(py) {
  console.log('\n## Decoding, tiny config (d 256, 4 layers), fp32 CPU, temperature 1');
  const config = benchModelConfig('tiny');
  const model = await LladaModel.random(config, { seed: 0 });
  // The threshold decoder's step count depends on the model's confidence, and the PyTorch script
  // draws its own random weights: where the NFE differ, the forward passes per second compare.
  const rows = [['decoder', 'G x prompt x gen', 'NFE', 'ours tok/s', 'PyTorch tok/s', 'PyTorch threads', 'ratio', 'ratio per forward pass']];
  const cases = quick
    ? [{ decoder: 'ar', G: 8, P: 32, L: 32 }]
    : [
        { decoder: 'ar', G: 8, P: 32, L: 32 },
        { decoder: 'ar', G: 8, P: 32, L: 128 },
        { decoder: 'low_confidence', G: 8, P: 32, L: 128, block: 32, steps: 128 },
        { decoder: 'threshold', G: 8, P: 32, L: 128, block: 32, threshold: 0.05 },
      ];
  for (const c of cases) {
    const prompt = Array.from({ length: c.P }, (_, t) => (t * 7) % (config.vocabSize - 3));
    let nfe = 0;
    const runs = c.L <= 32 ? 5 : 2;
    const secs = await timeMedian(async () => {
      const r = await model.generate(prompt, {
        decoder: c.decoder, genLength: c.L, blockLength: c.block, steps: c.steps, threshold: c.threshold,
        temperature: 1, numSamples: c.G, seed: 1,
      });
      // The batch's forward passes (its slowest sequence), as the PyTorch loop counts them.
      nfe = Math.max(...r.nfe);
    }, runs);
    const ours = (c.G * c.L) / secs;
    let torchRate = 'n/a', setting = 'python3-torch not installed', ratio = 'n/a', perForward = 'n/a';
    if (py) {
      const t = torchBest(py, 'torch_decode.py', {
        config: toRawConfig(config), decoder: c.decoder, samples: c.G, prompt: c.P, gen: c.L, block: c.block ?? 1,
        steps: c.steps ?? c.L, threshold: c.threshold ?? 0.9, runs: c.L <= 32 ? 3 : 1,
      });
      torchRate = ((c.G * c.L) / t.median_s).toFixed(1);
      setting = `${t.setting}, NFE ${t.nfe}`;
      ratio = `${(ours / Number(torchRate)).toFixed(2)}x`;
      perForward = `${((nfe / secs) / (t.nfe / t.median_s)).toFixed(2)}x`;
    }
    const name = c.decoder + (c.block ? ` (block ${c.block}${c.threshold !== undefined ? `, threshold ${c.threshold}` : ''})` : '');
    rows.push([name, `${c.G}x${c.P}x${c.L}`, nfe, ours.toFixed(1), torchRate, setting, ratio, perForward]);
  }
  await model.dispose();
  table(rows);
}

async function benchSft(py) {
  console.log('\n## Masked-diffusion SFT step (forward + backward + AdamW), fp32 CPU');
  const rows = [['config', 'batch x seq', 'ours tok/s', 'PyTorch tok/s', 'PyTorch threads', 'ratio']];
  const shapes = quick ? { tiny: [8, 64] } : { tiny: [8, 64], small: [4, 128] };
  for (const [name, [B, T]] of Object.entries(shapes)) {
    const config = benchModelConfig(name);
    const model = await LladaModel.random(config, { seed: 0 });
    const session = TrainingSession.create(model);
    const examples = Array.from({ length: B }, (_, b) => ({ prompt: [], response: Array.from({ length: T }, (_, t) => (b * 31 + t * 17) % (config.vocabSize - 3)), source: '' }));
    let k = 0;
    const opt = { learningRate: 1e-5, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8, weightDecay: 0, maxGradNorm: 1 };
    const runs = name === 'tiny' ? 10 : 4;
    const secs = await timeMedian(async () => {
      session.zeroGrad();
      const batch = maskedDiffusionBatch(examples, (i) => new Rng(k++, i), { maskTokenId: config.maskTokenId, padTokenId: null, sequencesPerStep: B });
      await session.lossBackward(batch);
      await session.step(1e-5, opt);
    }, runs);
    session.dispose();
    await model.dispose();
    const ours = (B * T) / secs;
    let torchRate = 'n/a', setting = 'python3-torch not installed', ratio = 'n/a';
    if (py) {
      const t = torchBest(py, 'torch_train.py', { task: 'sft', config: toRawConfig(config), batch: B, seq: T, runs });
      torchRate = ((B * T) / t.median_s).toFixed(0);
      setting = t.setting;
      ratio = `${(ours / Number(torchRate)).toFixed(2)}x`;
    }
    rows.push([`${name} (d ${config.dModel}, ${config.nLayers} layers)`, `${B}x${T}`, ours.toFixed(0), torchRate, setting, ratio]);
  }
  table(rows);
}

async function benchGrpo(py) {
  console.log('\n## One JustGRPO step (rollout + loss + AdamW; 1 prompt, G 8, prompt 32, gen 32), fp32 CPU');
  // The first step allocates (and the OS faults in) every buffer; a later step touches new memory
  // only where it needs more than any step before it (more distinct canvases), which the page-fault
  // count shows. Ours: the median of 3 steps after the first (tiny) or the mean of 2 (small).
  const rows = [['config', 'rollout reuse', 'ours s/step', 'first step s', 'page faults/step', 'kept MiB', 'PyTorch s/step', 'PyTorch threads', 'speed-up']];
  const names = pick(quick ? ['tiny'] : ['tiny', 'small']);
  for (const name of names) {
    const config = benchModelConfig(name);
    const oursRuns = name === 'tiny' ? 3 : 2, torchRuns = name === 'tiny' ? 3 : 1;
    const ours = [];
    for (const reuse of [true, false]) {
      const model = await LladaModel.random(config, { seed: 0 });
      const r = await runBench(model, { sections: ['grpo'], numGenerations: 8, promptLength: 32, genLength: 32, runs: oursRuns, ...(reuse ? {} : { reuseRolloutMemoryMB: 0 }) });
      const g = r.grpo;
      ours.push({ reuse, secs: g.medianSeconds, first: g.firstStepSeconds, faults: median(g.steps.map((x) => x.pageFaults)), kept: g.keptMiB });
      await model.dispose();
    }
    let theirs = null, setting = 'python3-torch not installed';
    if (py) {
      // The small step takes over a minute in PyTorch: one run, at the thread split measured best for it.
      const settings = name === 'tiny' ? [[1, 2], [2, 1]] : [[1, 2]];
      const t = torchBest(py, 'torch_train.py', { task: 'grpo', config: toRawConfig(config), prompt: 32, samples: 8, gen: 32, runs: torchRuns, warmup: name === 'tiny' }, settings);
      theirs = t.median_s;
      setting = t.setting;
    }
    for (const o of ours)
      rows.push([`${name} (d ${config.dModel}, ${config.nLayers} layers)`, o.reuse ? 'on' : 'off', o.secs.toFixed(2), o.first.toFixed(2),
        o.faults.toFixed(0), o.reuse ? o.kept.toFixed(0) : '',
        theirs === null ? 'n/a' : theirs.toFixed(2), setting, theirs === null ? 'n/a' : `${(theirs / o.secs).toFixed(2)}x`]);
  }
  table(rows);
}

async function benchTokenizer() {
  console.log('\n## Tokenizer (JS side, benchmark.js)');
  const files = charTokenizerFiles();
  const tok = Tokenizer.fromJSON(JSON.parse(files['tokenizer.json']), JSON.parse(files['tokenizer_config.json']));
  const text = 'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. '.repeat(10);
  await new Promise((resolve) => {
    new Benchmark.Suite()
      .add('encode 1 KB (character tokenizer)', () => tok.encode(text))
      .add('chat template + encode', () => tok.encodeChat([{ role: 'user', content: text }]))
      .on('cycle', (e) => console.log(String(e.target)))
      .on('complete', resolve)
      .run({ async: false });
  });
}

/**
 * bf16 against fp32, ours and PyTorch's (autocast, as JustGRPO's train.py runs), on one SFT step and
 * one JustGRPO step. Our two dtypes run alternately (A/B, one step of each in turn after a warm-up
 * step each), so load from other work on the machine hits both alike; medians and ratios.
 */
async function benchBf16(py) {
  console.log('\n## bf16 vs fp32 on the CPU: one SFT step (tiny: 8 x 64) and one JustGRPO step (G 8, prompt 32, gen 32)');
  const kernels = {};
  const rows = [['config', 'step', 'ours fp32 s', 'ours bf16 s', 'bf16 speed-up', 'PyTorch fp32 s', 'PyTorch autocast s', 'PyTorch threads', 'ours bf16 vs autocast']];
  const names = pick(quick ? ['tiny'] : ['tiny', 'small']);
  for (const name of names) {
    const config = benchModelConfig(name);
    // The small JustGRPO step takes a minute or more a side: 3 timed steps each there.
    const runs = quick || name === 'small' ? 3 : 5;
    for (const task of ['sft', 'grpo']) {
      const sides = [];
      for (const dtype of ['fp32', 'bf16']) {
        const model = await LladaModel.random(config, { seed: 0, dtype });
        kernels[dtype] = model.deviceInfo().dtype === 'BF16' ? model.deviceInfo().name : `OpenBLAS (${native().blas})`;
        sides.push(await stepper(model, task, config));
      }
      for (const s of sides) await s.step(); // warm-up: the first step allocates
      const times = [[], []];
      for (let r = 0; r < runs; r++)
        for (let i = 0; i < 2; i++) {
          const t0 = performance.now();
          await sides[i].step();
          times[i].push((performance.now() - t0) / 1000);
        }
      for (const s of sides) await s.dispose();
      const [f32, b16] = times.map(median);
      let tf = null, tb = null, setting = 'python3-torch not installed';
      if (py) {
        const spec = task === 'sft'
          ? { task, config: toRawConfig(config), batch: 8, seq: 64, runs }
          : { task, config: toRawConfig(config), prompt: 32, samples: 8, gen: 32, runs: name === 'tiny' ? 3 : 1, warmup: name === 'tiny' };
        const settings = name === 'tiny' ? [[1, 2], [2, 1]] : [[1, 2]];
        tf = torchBest(py, 'torch_train.py', spec, settings).median_s;
        const a = torchBest(py, 'torch_train.py', { ...spec, autocast: true }, settings);
        tb = a.median_s;
        setting = a.setting;
      }
      rows.push([`${name} (d ${config.dModel}, ${config.nLayers} layers)`, task, f32.toFixed(3), b16.toFixed(3), `${(f32 / b16).toFixed(2)}x`,
        tf === null ? 'n/a' : tf.toFixed(3), tb === null ? 'n/a' : tb.toFixed(3), setting, tb === null ? 'n/a' : `${(tb / b16).toFixed(2)}x`]);
    }
  }
  console.log(`ours: fp32 ${kernels.fp32}; bf16 ${kernels.bf16}`);
  if (py) {
    const r = spawnSync(py, ['-c', 'import torch; print(torch.__version__, torch.backends.mkldnn.is_available(), torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "")'], { encoding: 'utf8' });
    console.log(`PyTorch: ${r.stdout.trim()} (version, oneDNN available, CPU capability; ONEDNN_VERBOSE=1 shows its kernels)`);
  }
  table(rows);
}

/**
 * LLaDA-8B's shapes in bf16 on this machine: one forward (logits at every position) over one
 * 512-token sequence, with 1 and with 2 of the 32 layers. Ours holds the weights in bf16 only (the
 * inference load); PyTorch runs the reference forward under autocast over fp32 weights (as
 * JustGRPO's train.py does) and with bf16 weights. The 32-layer time is extrapolated, not
 * measured: the 1-layer time (embedding, one layer, ln_f, head) plus 31 per-layer times (2 layers
 * minus 1). Each side times its two models alternately; medians.
 */
async function benchLlada8b(py) {
  const seq = 512, runs = quick ? 2 : 5;
  console.log(`\n## LLaDA-8B shapes, bf16, 2 cores: one forward over 1 x ${seq} tokens (logits at every position), 1 and 2 of 32 layers`);
  const base = {
    dModel: 4096, nHeads: 32, nKvHeads: 32, headDim: 128, mlpHiddenSize: 12288, vocabSize: 126464, embeddingSize: 126464,
    maxSequenceLength: 4096, ropeTheta: 500000, rmsNormEps: 1e-5, maskTokenId: 126336, eosTokenId: 126081, padTokenId: 126081, bosTokenId: 126080,
  };
  const ids = [Array.from({ length: seq }, (_, t) => (t * 7919 + 13) % 126000)];
  const models = [];
  for (const nLayers of [1, 2]) {
    const t0 = performance.now();
    models.push(await LladaModel.random({ ...base, nLayers }, { seed: 0, initStd: 0.02, dtype: 'bf16' }));
    console.log(`ours: ${nLayers}-layer model drawn and rounded to bf16 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const mem = models[1].memoryBytes();
  console.log(`ours: 2-layer model holds ${(mem.weightsBf16 / 1e9).toFixed(3)} GB bf16 + ${(mem.weightsFp32 / 1e6).toFixed(3)} MB fp32 weights; kernels: ${models[1].deviceInfo().name}`);
  for (const m of models) await m.logits(ids); // warm-up: the first call grows the workspace
  const times = [[], []];
  for (let r = 0; r < runs; r++)
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      await models[i].logits(ids);
      times[i].push((performance.now() - t0) / 1000);
    }
  for (const m of models) await m.dispose();
  // Medians, and the fastest run of each (on a shared machine the least disturbed one): the
  // per-layer time is a difference of two times, so load on either moves it.
  const side = (name, one, two, setting) => ({ side: name, one: median(one), two: median(two), oneMin: Math.min(...one), twoMin: Math.min(...two), setting, one_all: one, two_all: two });
  const sides = [side('ours, bf16-only weights (oneDNN)', times[0], times[1], '2 pool threads')];
  if (py) {
    for (const mode of ['autocast', 'bf16']) {
      const t = torchBest(py, 'torch_llada8b.py', { config: toRawConfig({ ...base, nLayers: 2 }), seq, runs, mode }, [[2, 1]]);
      sides.push(side(mode === 'autocast' ? 'PyTorch autocast, fp32 weights' : 'PyTorch, bf16 weights', t.times['1'], t.times['2'], t.setting));
    }
  }
  const rows = [['side', '1 layer s', '2 layers s', 'per layer s', '32 layers s (1 layer + 31 x per layer)', 'tok/s at 32 layers', 'threads', 'ours speed-up']];
  const full = (one, two) => one + 31 * (two - one);
  for (const [label, one, two] of [['median', 'one', 'two'], ['fastest', 'oneMin', 'twoMin']])
    for (const s of sides) {
      const f = full(s[one], s[two]);
      rows.push([`${s.side} (${label})`, s[one].toFixed(2), s[two].toFixed(2), (s[two] - s[one]).toFixed(2), f.toFixed(1), (seq / f).toFixed(1), s.setting,
        `${(f / full(sides[0][one], sides[0][two])).toFixed(2)}x`]);
    }
  table(rows);
  for (const s of sides) console.log(`${s.side}: 1 layer ${s.one_all.map((t) => t.toFixed(2)).join(' ')} s; 2 layers ${s.two_all.map((t) => t.toFixed(2)).join(' ')} s`);
}

/** One training step of `task` on `model`, repeatable: SFT on a fixed 8 x 64 batch, or a JustGRPO step. */
async function stepper(model, task, config) {
  if (task === 'sft') {
    const session = TrainingSession.create(model);
    const examples = Array.from({ length: 8 }, (_, b) => ({ prompt: [], response: Array.from({ length: 64 }, (_, t) => (b * 31 + t * 17) % (config.vocabSize - 3)), source: '' }));
    const opt = { learningRate: 1e-5, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8, weightDecay: 0, maxGradNorm: 1 };
    let k = 0;
    return {
      step: async () => {
        session.zeroGrad();
        const batch = maskedDiffusionBatch(examples, (i) => new Rng(k++, i), { maskTokenId: config.maskTokenId, padTokenId: null, sequencesPerStep: 8 });
        await session.lossBackward(batch);
        await session.step(1e-5, opt);
      },
      dispose: async () => {
        session.dispose();
        await model.dispose();
      },
    };
  }
  const cfg = parseGrpoConfig({ model: 'bench', data: { train: 'bench' }, numGenerations: 8, promptsPerStep: 1, maxCompletionLength: 32, learningRate: 1e-5, maxSteps: 1000 }, 'bench');
  const trainer = await GRPOTrainer.create(model, cfg, {
    rewardFunctions: { even: ({ completionIds }) => completionIds.map((ids) => ids.filter((x) => x % 2 === 0).length / ids.length) },
  });
  const record = { ids: Array.from({ length: 32 }, (_, i) => (i * 7 + 3) % (config.vocabSize - 3)), text: '', columns: {}, source: 'bench' };
  let s = 0;
  return {
    step: () => trainer.step([record], s++),
    dispose: async () => {
      trainer.dispose();
      await model.dispose();
    },
  };
}

// `--only forward,decode,sft,grpo,bf16,llada8b,scaling,tokenizer,rewards` runs those sections alone;
// `--configs tiny|small` limits the sft, grpo and bf16 sections to one config.
const only = (() => {
  const i = process.argv.indexOf('--only');
  return i < 0 ? null : new Set(process.argv[i + 1].split(','));
})();
const want = (section) => !only || only.has(section);

async function main() {
  const py = torchPython();
  console.log(`justgrpo bench (${quick ? 'quick' : 'full'}); PyTorch: ${py ?? 'not found (apt-get install python3-torch)'}`);
  // Both sides use this OpenBLAS with these kernels (PyTorch's Debian build links the same library).
  const forced = process.env.OPENBLAS_CORETYPE ? ` (OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE} in the environment)` : '';
  console.log(`BLAS: ${native().blas}${forced}`);
  if (want('forward')) await benchForward(py);
  if (want('decode')) await benchDecode(py);
  if (want('sft')) await benchSft(py);
  if (want('grpo')) await benchGrpo(py);
  if (want('bf16')) await benchBf16(py);
  if (want('llada8b')) await benchLlada8b(py);
  if (!quick && want('scaling')) {
    const { benchScaling } = await import('./scaling.mjs');
    await benchScaling();
  }
  if (want('tokenizer')) await benchTokenizer();
  if (want('rewards') && existsSync(path.join(here, 'rewards.mjs'))) {
    console.log('\n## Rewards');
    const { bench } = await import('./rewards.mjs');
    await bench();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
