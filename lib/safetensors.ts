// The safetensors format: 8 bytes (u64 LE header length N), N bytes of JSON header, then the raw
// data. This file parses and validates headers and builds them; the native engine moves the bytes
// at the offsets validated here (no whole-file Buffer, so 16 GB checkpoints load).
import { CheckpointError } from './errors.js';
import { openRegularFile, parseJsonText } from './fsutil.js';

export type DType = 'F32' | 'BF16' | 'F16';
export const DTYPE_BYTES: Record<DType, number> = { F32: 4, BF16: 2, F16: 2 };

// Sizes of every dtype the format defines, so a header with an unsupported dtype is still
// validated and then refused by name rather than as a parse error.
const ALL_DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};

export type TensorEntry = {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
};

export type SafetensorsHeader = {
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
  fileSize: number;
};

/** Headers above this size are refused before allocation (real ones are well under 1 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Reads and validates the header of a safetensors file; errors name the file and tensor. */
export async function readSafetensorsHeader(file: string): Promise<SafetensorsHeader> {
  let fh;
  try {
    fh = await openRegularFile(file);
  } catch (err) {
    throw new CheckpointError(`Cannot open ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const fileSize = (await fh.stat()).size;
    const fail = (msg: string): never => {
      throw new CheckpointError(`${file}: ${msg}`);
    };
    if (fileSize < 8) fail(`file is ${fileSize} bytes, too short for a safetensors header`);
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(Math.min(MAX_HEADER_BYTES, fileSize - 8)))
      fail(`header length ${headerLen} does not fit in a file of ${fileSize} bytes`);
    const n = Number(headerLen);
    const buf = Buffer.alloc(n);
    await fh.read(buf, 0, n, 8);
    let json: unknown;
    try {
      json = parseJsonText(buf.toString('utf8'));
    } catch (err) {
      fail(`header is not valid JSON (${(err as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) fail('header is not a JSON object');
    const dataStart = 8 + n;
    const dataSize = fileSize - dataStart;
    const tensors = new Map<string, TensorEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('`__metadata__` is not an object');
        metadata = value as Record<string, string>;
        continue;
      }
      const t = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof t !== 'object' || t === null) fail(`tensor ${name}: entry is not an object`);
      if (typeof t.dtype !== 'string' || !(t.dtype in ALL_DTYPE_BYTES)) fail(`tensor ${name}: unknown dtype ${JSON.stringify(t.dtype)}`);
      const shape = t.shape;
      if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0))
        fail(`tensor ${name}: shape must be an array of non-negative integers`);
      const offs = t.data_offsets;
      if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0))
        fail(`tensor ${name}: data_offsets must be two non-negative integers`);
      const [begin, end] = offs as [number, number];
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      const bytes = numel * ALL_DTYPE_BYTES[t.dtype as string]!;
      if (end < begin) fail(`tensor ${name}: data_offsets [${begin}, ${end}] run backwards`);
      if (end - begin !== bytes)
        fail(`tensor ${name}: data_offsets span ${end - begin} bytes but dtype ${t.dtype} and shape [${shape}] need ${bytes}`);
      if (end > dataSize) fail(`tensor ${name}: data_offsets end at ${end}, past the ${dataSize} bytes of data in the file`);
      tensors.set(name, { name, dtype: t.dtype as string, shape: shape as number[], offset: dataStart + begin, byteLength: bytes });
    }
    const sorted = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1]!, cur = sorted[i]!;
      if (cur.offset < prev.offset + prev.byteLength) fail(`tensors ${prev.name} and ${cur.name} overlap`);
    }
    return { tensors, metadata, fileSize };
  } finally {
    await fh.close();
  }
}

/** Builds a header (length prefix included, padded to 8 bytes) for tensors written in the given order. */
export function buildSafetensorsHeader(
  tensors: { name: string; dtype: DType; shape: number[] }[],
  metadata: Record<string, string> = { format: 'pt' },
): { header: Buffer; dataBytes: number } {
  const obj: Record<string, unknown> = { __metadata__: metadata };
  let pos = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    obj[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + bytes] };
    pos += bytes;
  }
  let json = JSON.stringify(obj);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const header = Buffer.alloc(8 + body.length);
  header.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(header, 8);
  return { header, dataBytes: pos };
}
