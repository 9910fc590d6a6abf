// Native misuse from JavaScript: the native Engine and Trainer (and the public model over them)
// called after dispose, concurrently, with wrong argument types, with huge or negative sizes, and
// aborted mid-call. Every case is a JavaScript error, never a crash: a segfault would take the
// test worker down and fail the file. Several cases are regressions of fuzzer and sanitizer
// findings (marked).
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { AbortError, loadModel, type LladaModel } from '../../lib/index.js';
import { native, type NativeDecodeOptions, type NativeEngine, type NativeTrainer } from '../../lib/native/binding.js';
import { FIXTURES } from '../helpers/fixtures.js';
import { tmpDir } from '../helpers/tmp.js';
import { randomEngine } from '../helpers/train.js';

const tmp = tmpDir();
const open: { dispose(): unknown }[] = [];
afterAll(async () => {
  for (const o of open.reverse()) await o.dispose();
});

const i32 = (...xs: number[]) => Int32Array.from(xs);
const AR: NativeDecodeOptions = { decoder: 'low_confidence', genLength: 4, blockLength: 1, steps: 4 };
// A call through `any`: the point is what the native side does with what TypeScript would refuse.
type Loose = Record<string, (...args: unknown[]) => unknown>;
const loose = (o: object) => o as unknown as Loose;

/** Calls `fn` and expects a JavaScript Error (thrown or rejected) whose message matches. */
async function expectJsError(fn: () => unknown, message: RegExp) {
  let err: unknown = null;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected an error matching ${message}`).toBeInstanceOf(Error);
  expect((err as Error).message).toMatch(message);
}

async function engine(): Promise<NativeEngine> {
  const e = await randomEngine({ maxSequenceLength: 64 }, 3);
  open.push(e);
  return e;
}

describe('methods after dispose()', () => {
  it('every Engine method after dispose is a "Model is disposed" error', async () => {
    const e = await randomEngine();
    e.dispose();
    const calls: [string, unknown[]][] = [
      ['paramInfo', []], ['numParams', []], ['forward', [i32(1), i32(0, 1), i32(0)]], ['initRandom', [1, 0.1]],
      ['getParam', ['model.transformer.ln_f.weight']], ['setParam', ['model.transformer.ln_f.weight', new Float32Array(64)]],
      ['decode', [i32(1), i32(0, 1), Float64Array.from([1]), AR]], ['logprobs', [i32(1), i32(0, 1), i32(0), i32(2), i32()]],
      ['loadTensors', [path.join(FIXTURES, 'mha_f32', 'model.safetensors'), []]], ['saveSafetensors', [path.join(tmp, 'x'), Buffer.alloc(8), []]],
    ];
    for (const [name, args] of calls) await expectJsError(() => loose(e)[name]!(...args), /Model is disposed/);
    e.dispose(); // twice is fine
    e.cancel(); // harmless
  });

  it('a Trainer after its Engine or itself is disposed, and a Trainer of a disposed Engine', async () => {
    const e = await randomEngine();
    const t = new (native().Trainer)(e);
    e.dispose();
    await expectJsError(() => t.crossEntropyBackward(i32(1), i32(0, 1), i32(0), i32(2), Float32Array.from([1])), /Model is disposed/);
    await expectJsError(() => t.step({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 }), /Model is disposed/);
    await expectJsError(() => t.getGrad('model.transformer.ln_f.weight'), /Model is disposed/);
    t.dispose();
    await expectJsError(() => t.zeroGrad(), /Trainer is disposed/);
    await expectJsError(() => t.stepCount, /Trainer is disposed/);
    await expectJsError(() => new (native().Trainer)(e), /Trainer: Model is disposed/);
  });

  it('the public model: DisposedError for every method, dispose twice is fine', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    await m.dispose();
    await m.dispose();
    for (const call of [() => m.logits([[1]]), () => m.generate([1]), () => m.getParameter('x'), () => m.parameterInfo(), () => m.tokenizer])
      await expectJsError(call, /Model is disposed/);
  });
});

describe('concurrent calls on one model', () => {
  it('a second native call while one runs is a "busy" error; the first still resolves', async () => {
    const e = await engine();
    const first = e.forward(i32(...Array(64).fill(5)), i32(0, 64), i32(0, 63));
    await expectJsError(() => e.forward(i32(1), i32(0, 1), i32(0)), /busy with another call/);
    await expectJsError(() => e.decode(i32(1), i32(0, 1), Float64Array.from([1]), AR), /busy with another call/);
    await expectJsError(() => e.getParam('model.transformer.ln_f.weight'), /busy with another call/);
    await expectJsError(() => e.dispose(), /busy with another call; await it before dispose/);
    const t = new (native().Trainer)(e);
    open.push(t);
    await expectJsError(() => t.zeroGrad(), /busy with another call/);
    expect((await first).length).toBe(2 * 104);
    // Free again once settled.
    expect((await e.forward(i32(1), i32(0, 1), i32(0))).length).toBe(104);
  });

  it('the public model queues concurrent calls of every kind and answers each as if alone', async () => {
    const m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    open.push(m);
    const alone = [await m.logits([[1, 2, 3]]), (await m.generate([4, 5], { decoder: 'ar', genLength: 3 })).tokens, await m.getParameter('model.transformer.ln_f.weight')];
    const together = await Promise.all([m.logits([[1, 2, 3]]), m.generate([4, 5], { decoder: 'ar', genLength: 3 }).then((r) => r.tokens),
      m.getParameter('model.transformer.ln_f.weight'), m.save(path.join(tmp, 'concurrent-save'))]);
    expect(together.slice(0, 3)).toEqual(alone);
  });
});

describe('wrong argument types', () => {
  it('Engine constructor: missing, mistyped and wrong-kind config fields', () => {
    const E = native().Engine as unknown as new (...a: unknown[]) => NativeEngine;
    const good = { dModel: 64, nLayers: 1, nHeads: 4, nKvHeads: 4, mlpHiddenSize: 32, vocabSize: 10, embeddingSize: 10, maxSequenceLength: 8, maskTokenId: 9, ropeTheta: 1e4, rmsNormEps: 1e-5 };
    expect(() => new E()).toThrow(/Engine: Expected a config object/);
    expect(() => new E(42)).toThrow(/Engine: Expected a config object/);
    expect(() => new E({ ...good, dModel: '64' })).toThrow(/Expected a number for config field `dModel`/);
    expect(() => new E({ ...good, ropeTheta: undefined })).toThrow(/`ropeTheta`/);
    expect(() => new E({ ...good, maskTokenId: 10 })).toThrow(/mask_token_id must lie in \[0, vocab_size\)/);
    expect(() => new E({ ...good, rmsNormEps: NaN })).toThrow(/rms_norm_eps must be a finite number > 0/);
    expect(() => new (native().Trainer)({} as NativeEngine)).toThrow(/Expected an Engine for `engine`/);
  });

  it('Engine methods: strings, plain arrays, the wrong typed array, missing arguments', async () => {
    const e = await engine();
    const cases: [string, unknown[], RegExp][] = [
      ['forward', [[1, 2], i32(0, 2), i32(0)], /Expected an Int32Array for `tokens`/],
      ['forward', [i32(1), new Float32Array([0, 1]), i32(0)], /`seqStarts`/],
      ['forward', [i32(1), i32(0, 1)], /`rows`/],
      ['decode', [i32(1), i32(0, 1), [1], AR], /Expected a Float64Array for `seeds`/],
      ['decode', [i32(1), i32(0, 1), Float64Array.from([1]), 'ar'], /Expected an object for `options`/],
      ['decode', [i32(1), i32(0, 1), Float64Array.from([1]), { ...AR, decoder: 'fast' }], /'low_confidence', 'random' or 'threshold'/],
      ['decode', [i32(1), i32(0, 1), Float64Array.from([1]), { ...AR, stopIds: [1] }], /`stopIds`/],
      ['getParam', [42], /Expected a string for `name`/],
      ['getParam', ['no.such.tensor'], /Unknown tensor no.such.tensor/],
      ['setParam', ['model.transformer.ln_f.weight', [1, 2]], /Float32Array for `data`/],
      ['loadTensors', [path.join(tmp, 'none'), 'x'], /Expected an array for `tensors`/],
      ['loadTensors', [path.join(tmp, 'none'), [null]], /Expected an object for `tensors\[0\]`/],
      ['loadTensors', [path.join(tmp, 'none'), [{ name: 'model.transformer.ln_f.weight', offset: '8', dtype: 'F32' }]], /`offset`/],
      ['loadTensors', [path.join(tmp, 'none'), [{ name: 'model.transformer.ln_f.weight', offset: 8, dtype: 'F64' }]], /Unsupported dtype F64/],
      ['saveSafetensors', [path.join(tmp, 'x'), 'header', []], /Buffer for `header`/],
      ['initRandom', ['1', 0.1], /Expected \(seed: number, std: number\)/],
    ];
    for (const [name, args, msg] of cases) await expectJsError(() => loose(e)[name]!(...args), msg);
    // Still healthy.
    expect((await e.forward(i32(1), i32(0, 1), i32(0))).length).toBe(104);
  });

  it('Trainer methods: wrong types are named', async () => {
    const e = await engine();
    const t = new (native().Trainer)(e);
    open.push(t);
    const cases: [string, unknown[], RegExp][] = [
      ['crossEntropyBackward', [i32(1), i32(0, 1), i32(0), i32(2), [1]], /Expected a Float32Array for `weights` but received an array of length 1/],
      ['policyLossBackward', [i32(1), i32(0, 1), i32(0), i32(2), Float32Array.from([1]), null], /Expected an options object for `options` but received null/],
      ['step', [{ lr: '1' }], /Expected a number for `lr`/],
      ['step', [{ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1, skipNonFinite: 'yes' }], /a boolean for `skipNonFinite`/],
      ['setGrad', ['model.transformer.ln_f.weight', new Float32Array(3)], /a Float32Array of 64 elements for `data`/],
      ['setMoments', ['model.transformer.ln_f.weight', new Float32Array(64), 'v'], /`v`/],
      ['loadMoments', [path.join(tmp, 'none'), [{ name: 'model.transformer.ln_f.weight', moment: 'x', offset: 8, dtype: 'F32' }]], /'m' or 'v' for `moment`/],
      ['workspaceBytes', ['10', 1], /a number for `nTokens`/],
    ];
    for (const [name, args, msg] of cases) await expectJsError(() => loose(t)[name]!(...args), msg);
    await expectJsError(() => ((t as unknown as { stepCount: unknown }).stepCount = -1), /non-negative integer for `stepCount`/);
  });
});

describe('huge or negative sizes', () => {
  it('packed batches: negative ids, rows outside, seqStarts that overflow int32 (UBSan finding)', async () => {
    const e = await engine();
    const cases: [Int32Array, Int32Array, Int32Array, RegExp][] = [
      [i32(-1), i32(0, 1), i32(0), /token ids in \[0, \d+\) for `tokens` but received -1 at index 0/],
      [i32(1, 2), i32(0, 2), i32(2), /row indices in \[0, 2\) for `rows` but received 2 at index 0/],
      [i32(1, 2), i32(0, 2), i32(-2147483648), /`rows` but received -2147483648 at index 0/],
      // 2147483647 - (-2147483648) overflowed int32 in the check before it was widened.
      [i32(1, 2), i32(0, -2147483648, 2147483647, 2), i32(0), /sequences of 1 to 64 tokens for `seqStarts` but received a sequence [01] of/],
      [i32(1, 2), i32(0, 2147483647, 2), i32(0), /sequences of 1 to 64 tokens for `seqStarts` but received a sequence 0 of 2147483647 tokens/],
      [i32(), i32(0), i32(), /sequence offsets from 0 to tokens.length \(0\) for `seqStarts`/],
    ];
    for (const [tokens, starts, rows, msg] of cases) await expectJsError(() => e.forward(tokens, starts, rows), msg);
  });

  it('decode options: huge, negative, fractional and NaN counts (a double-to-int cast was undefined behaviour)', async () => {
    const e = await engine();
    const p = [i32(1, 2), i32(0, 2), Float64Array.from([7])] as const;
    const cases: [Partial<NativeDecodeOptions>, RegExp][] = [
      [{ genLength: 2 ** 40, blockLength: 1, steps: 2 ** 40 }, /genLength must be below 2\^31/],
      [{ genLength: -4 }, /genLength must be positive/],
      [{ steps: 1e300 }, /Expected an integer for `steps` but received 1e\+300/],
      [{ steps: NaN }, /Expected an integer for `steps`/],
      [{ steps: 2.5 }, /Expected an integer for `steps`/],
      [{ minNewTokens: -1 }, /minNewTokens must be >= 0/],
      [{ genLength: 63, blockLength: 63, steps: 63 }, /exceeds the model's maximum length 64/],
      [{ genLength: 3, blockLength: 3, steps: 2147483646 }, /Out of memory: the decode results needs \d+ bytes/],
    ];
    for (const [o, msg] of cases) await expectJsError(() => e.decode(...p, { ...AR, ...o } as NativeDecodeOptions), msg);
    await expectJsError(() => e.decode(i32(1), i32(0, 1), Float64Array.from([-1]), AR), /seeds must be integers in \[0, 2\^53\)/);
    await expectJsError(() => e.decode(i32(1), i32(0, 1), Float64Array.from([2 ** 60]), AR), /seeds must be integers/);
    await expectJsError(() => e.decode(i32(1, 2), i32(0, 2, 1, 2), Float64Array.from([1, 2, 3]), AR), /promptStarts must not decrease/);
  });

  it('model sizes beyond what the engine addresses, and negative ones', () => {
    const E = native().Engine;
    const base = { dModel: 64, nLayers: 1, nHeads: 4, nKvHeads: 4, mlpHiddenSize: 32, vocabSize: 10, embeddingSize: 10, maxSequenceLength: 8, maskTokenId: 9, ropeTheta: 1e4, rmsNormEps: 1e-5 };
    expect(() => new E({ ...base, dModel: 2 ** 40 })).toThrow(/Model sizes must be below 2\^31/);
    expect(() => new E({ ...base, mlpHiddenSize: -5 })).toThrow(/Model sizes must be positive/);
    expect(() => new E({ ...base, nLayers: 2 ** 20 })).toThrow(/n_layers below 65536/);
    expect(() => new E({ ...base, maxSequenceLength: 2 ** 31 - 2 })).toThrow(/Out of memory: RoPE tables needs \d+ bytes/);
  });

  it('tensor reads at offsets that lie: negative, past the end, and overflowing int64 (UBSan finding)', async () => {
    const e = await engine();
    const file = path.join(tmp, 'small.bin');
    writeFileSync(file, Buffer.alloc(100));
    const name = 'model.transformer.ln_f.weight';
    await expectJsError(() => e.loadTensors(file, [{ name, offset: -8, dtype: 'F32' }]), /needs 256 bytes from offset -8 but the file has 100/);
    await expectJsError(() => e.loadTensors(file, [{ name, offset: 2 ** 62, dtype: 'F32' }]), /from offset 4611686018427387904 but the file has 100/);
    await expectJsError(() => e.loadTensors(file, [{ name, offset: 0, dtype: 'BF16' }]), /needs 128 bytes from offset 0 but the file has 100/);
    const t = new (native().Trainer)(e);
    open.push(t);
    await expectJsError(() => t.loadMoments(file, [{ name, moment: 'm', offset: 2 ** 62, dtype: 'F32' }]), /but the file has 100/);
    await expectJsError(() => t.loadMoments(file, [{ name, moment: 'm', offset: -1, dtype: 'F32' }]), /non-negative integer for `offset`/);
    await expectJsError(() => t.workspaceBytes(-1, 0), /positive integer for `nTokens`/);
  });
});

describe('AbortSignal mid-call', () => {
  let m: LladaModel;
  it('generate: aborted after its first step rejects with AbortError; the model works afterwards', async () => {
    m = await loadModel(path.join(FIXTURES, 'mha_f32'));
    open.push(m);
    const ac = new AbortController();
    let steps = 0;
    const p = m.generate([1, 2, 3], { decoder: 'ar', genLength: 48, signal: ac.signal, onProgress: () => (++steps === 1 ? ac.abort() : undefined) });
    await expect(p).rejects.toBeInstanceOf(AbortError);
    expect(steps).toBeLessThan(48);
    expect((await m.generate([1, 2, 3], { decoder: 'ar', genLength: 4 })).tokens[0]).toHaveLength(4);
  });

  it('generate and logits with a signal aborted before the call: AbortError, nothing runs', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(m.generate([1], { genLength: 4, blockLength: 4, signal: ac.signal })).rejects.toBeInstanceOf(AbortError);
    await expect(m.logits([[1, 2]], { signal: ac.signal })).rejects.toBeInstanceOf(AbortError);
  });

  it('logits aborted while queued behind another call, or while running: AbortError; the queue goes on', async () => {
    const ac = new AbortController();
    const long = m.generate([1, 2], { decoder: 'ar', genLength: 32 });
    const queued = m.logits([[1, 2, 3]], { signal: ac.signal });
    const after = m.logits([[4, 5]]);
    ac.abort();
    await expect(queued).rejects.toBeInstanceOf(AbortError);
    expect((await long).tokens[0]).toHaveLength(32);
    expect((await after).length).toBe(2 * m.config.embeddingSize);
    const ac2 = new AbortController();
    const running = m.logits([Array(64).fill(3)], { signal: ac2.signal });
    setImmediate(() => ac2.abort());
    await expect(running).rejects.toBeInstanceOf(AbortError);
  });

  it('an aborted decode on the raw engine rejects with "Aborted" and releases the engine', async () => {
    const e = await engine();
    const p = e.decode(i32(1), i32(0, 1), Float64Array.from([1]), { ...AR, genLength: 60, steps: 60 }, () => e.cancel());
    await expectJsError(() => p, /decode: Aborted/);
    expect((await e.forward(i32(1), i32(0, 1), i32(0))).length).toBe(104);
  });
});
