// Errors cross the native boundary with a kind: `code` (ERR_JG_*) and `where` (the native file and
// line, kept out of the message), and lib/native/binding.ts maps each code to one of the package's
// error classes, once (fromNative).
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import {
  AbortError, CheckpointError, DisposedError, EngineError, InputError, InsufficientMemoryError, StorageError,
} from '../../lib/index.js';
import { fromNative, native, type NativeDecodeOptions, type NativeEngine } from '../../lib/native/binding.js';
import { tmpDir } from '../helpers/tmp.js';
import { randomEngine } from '../helpers/train.js';

const tmp = tmpDir();
const open: NativeEngine[] = [];
afterAll(() => {
  for (const e of open) e.dispose();
});

const i32 = (...xs: number[]) => Int32Array.from(xs);
const AR: NativeDecodeOptions = { decoder: 'low_confidence', genLength: 4, blockLength: 1, steps: 4 };

async function caught(fn: () => unknown): Promise<Error & { code?: string; where?: string }> {
  try {
    await fn();
  } catch (e) {
    return e as Error & { code?: string; where?: string };
  }
  throw new Error('expected an error');
}

async function engine(): Promise<NativeEngine> {
  const e = await randomEngine({ maxSequenceLength: 64 }, 3);
  open.push(e);
  return e;
}

describe('native error kinds', () => {
  it('each failure carries its code, and where it was thrown apart from the message', async () => {
    const e = await engine();
    const file = path.join(tmp, 'short.bin');
    writeFileSync(file, Buffer.alloc(10));
    const cases: [string, () => unknown, string][] = [
      ['bad decode options', () => e.decode(i32(1), i32(0, 1), Float64Array.from([1]), { ...AR, genLength: -4 }), 'ERR_JG_INPUT'],
      ['a token outside the vocabulary', () => e.forward(i32(999), i32(0, 1), i32(0)), 'ERR_JG_INPUT'],
      ['results that cannot fit', () => e.decode(i32(1, 2), i32(0, 2), Float64Array.from([7]), { ...AR, genLength: 3, blockLength: 3, steps: 2147483646 }), 'ERR_JG_OUT_OF_MEMORY'],
      ['a weights file shorter than its header says', () => e.loadTensors(file, [{ name: 'model.transformer.ln_f.weight', offset: 8, dtype: 'F32' }]), 'ERR_JG_CHECKPOINT'],
      ['a file that cannot be created', () => e.saveSafetensors(path.join(tmp, 'no', 'such', 'dir', 'x'), Buffer.alloc(8), []), 'ERR_JG_STORAGE'],
      ['an op this build has no backend for', () => native().testOp('tpu' as 'cpu', 'rmsnorm', 'F32', {}, {}), 'ERR_JG_UNSUPPORTED'],
    ];
    for (const [what, fn, code] of cases) {
      const err = await caught(fn);
      expect(err.code, what).toBe(code);
      expect(err.message, what).not.toMatch(/\.(cpp|h):\d+/);
    }
    // Checks made with JG_CHECK say where (argument readers name the argument instead).
    const err = await caught(() => e.decode(i32(1), i32(0, 1), Float64Array.from([1]), { ...AR, genLength: -4 }));
    expect(err.where).toMatch(/native\/\w+\/\w+\.(cpp|h):\d+$/);
  });

  it('busy, aborted and disposed have their own codes', async () => {
    const e = await engine();
    const running = e.decode(i32(1), i32(0, 1), Float64Array.from([1]), { ...AR, genLength: 48, blockLength: 1, steps: 48 });
    expect((await caught(() => e.getParam('model.transformer.ln_f.weight'))).code).toBe('ERR_JG_BUSY');
    e.cancel();
    expect((await caught(() => running)).code).toBe('ERR_JG_ABORTED');
    e.dispose();
    expect((await caught(() => e.numParams())).code).toBe('ERR_JG_DISPOSED');
  });

  it('fromNative maps every code to one error class, keeps the message, and leaves other errors alone', () => {
    const make = (code: string) => Object.assign(new Error(`call: what (${code})`), { code });
    const want: [string, new (...a: never[]) => Error][] = [
      ['ERR_JG_INPUT', InputError], ['ERR_JG_OUT_OF_MEMORY', InsufficientMemoryError], ['ERR_JG_CHECKPOINT', CheckpointError],
      ['ERR_JG_STORAGE', StorageError], ['ERR_JG_ABORTED', AbortError], ['ERR_JG_DISPOSED', DisposedError],
      ['ERR_JG_BUSY', EngineError], ['ERR_JG_UNSUPPORTED', EngineError], ['ERR_JG_INTERNAL', EngineError],
    ];
    for (const [code, cls] of want) {
      const mapped = fromNative(make(code)) as Error;
      expect(mapped, code).toBeInstanceOf(cls);
      if (cls !== AbortError && cls !== DisposedError) expect(mapped.message).toBe(`call: what (${code})`);
    }
    const plain = new Error('not ours');
    expect(fromNative(plain)).toBe(plain);
    const ours = new InputError('already ours');
    expect(fromNative(ours)).toBe(ours);
  });
});
