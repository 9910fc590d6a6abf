// Seeds for the native fuzzers (native/fuzz), in the byte layout native/fuzz/input.h reads, built
// from the committed reference fixtures: real safetensors files for fuzz_tensor_io, and valid
// batches, decode requests and the tiny model's config for fuzz_batch.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const out = process.argv[2] ?? 'build-fuzz/seeds';
const fixtures = 'test/reference/fixtures';

// A small number is one byte; anything else is 0xF0 and 8 (or 4) little-endian bytes.
const i64 = (v) => {
  if (v >= -128 && v < 112) return [v & 0xff];
  const b = Buffer.alloc(9);
  b[0] = 0xf0;
  b.writeBigInt64LE(BigInt(v), 1);
  return [...b];
};
const i32 = (v) => {
  if (v >= -128 && v < 112) return [v & 0xff];
  const b = Buffer.alloc(5);
  b[0] = 0xf0;
  b.writeInt32LE(v, 1);
  return [...b];
};
const str = (s) => [s.length, ...Buffer.from(s)];
const ints = (xs) => [xs.length, ...xs.flatMap(i32)];

const seeds = { fuzz_tensor_io: [], fuzz_batch: [] };

// tensor_io: a real file's first 3 KB with its own first tensor's offset, and variants.
for (const [file, name, dtype] of [
  ['mha_f32/model.safetensors', 'model.transformer.ln_f.weight', 'F32'],
  ['mha_f16/model.safetensors', 'model.transformer.ln_f.weight', 'F16'],
  ['gqa_bf16/model-00001-of-00002.safetensors', 'model.transformer.blocks.0.attn_norm.weight', 'BF16'],
]) {
  const bytes = readFileSync(path.join(fixtures, file));
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const body = [...bytes.subarray(0, 3000)];
  seeds.fuzz_tensor_io.push([...i64(4), ...i64(8 + headerLen), ...str(dtype), ...str(name), ...body]);
  seeds.fuzz_tensor_io.push([...i64(16), ...i64(8), ...str(dtype), ...str('not.a.tensor'), ...body]);
  seeds.fuzz_tensor_io.push([...i64(2 ** 61), ...i64(2 ** 62), ...str(dtype), ...str('x'), ...body]);
}

// fuzz_batch: mode 0 forward, 1 loss + backward, 2 decode, 3 model config (the tiny model's).
const batch = [...ints([1, 2, 3, 4, 5]), ...ints([0, 2, 5]), ...ints([0, 3, 4]), ...ints([2, 3, 11])];
seeds.fuzz_batch.push([0, ...batch], [1, ...batch, 0], [1, ...batch, 1]);
for (const mode of [0, 1, 2, 3 * 1, 3 * 2 + 2, 0x40, 0x80 | 1]) {
  seeds.fuzz_batch.push([
    2, mode, ...i64(4), ...i64(2), ...i64(4), 30, 180, 64, ...i64(1), ...ints([3]), ...ints([1, 2, 3]), ...ints([0, 1, 3]),
    2, ...i64(5), ...i64(6),
  ]);
}
seeds.fuzz_batch.push([3, ...[8, 1, 2, 1, 12, 10, 12, 8, 9].flatMap(i64), 100, 1]);

for (const [target, list] of Object.entries(seeds)) {
  const dir = path.join(out, target);
  mkdirSync(dir, { recursive: true });
  list.forEach((bytes, i) => writeFileSync(path.join(dir, `seed-${i}`), Buffer.from(bytes)));
}
console.log(`seeds: ${Object.entries(seeds).map(([t, l]) => `${l.length} for ${t}`).join(', ')} in ${out}`);
