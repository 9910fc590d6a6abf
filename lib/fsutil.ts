// File-system helpers: durable writes and directories that appear whole or not at all.
import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

export async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

export async function writeFileSynced(file: string, text: string): Promise<void> {
  const fh = await open(file, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Fills a fresh temporary sibling of `dir` and renames it into place, so `dir` is never seen half
 * written: a crash leaves either the old directory or the new one (and a stray temporary).
 */
export async function atomicDirectory(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const abs = path.resolve(dir);
  await mkdir(path.dirname(abs), { recursive: true });
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = `${abs}.tmp-${suffix}`;
  await mkdir(tmp);
  try {
    await fill(tmp);
    if (await exists(abs)) {
      const old = `${abs}.old-${suffix}`;
      await rename(abs, old);
      await rename(tmp, abs);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, abs);
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Writes files into an existing directory the way save_pretrained does: `fill` writes them into a
 * temporary directory inside `dir`, then each is renamed over its namesake (each file appears whole
 * or not at all). Files `fill` did not write are kept, except those `stale(name)` claims (an
 * earlier save's weight shards that would otherwise be loaded in place of the new ones).
 * Returns the names written.
 */
export async function replaceFiles(dir: string, fill: (tmp: string) => Promise<void>, stale: (name: string) => boolean = () => false): Promise<string[]> {
  const tmp = path.join(dir, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp);
  try {
    await fill(tmp);
    const written = await readdir(tmp);
    for (const name of written) await rename(path.join(tmp, name), path.join(dir, name));
    const keep = new Set(written);
    for (const name of await readdir(dir)) if (!keep.has(name) && stale(name)) await rm(path.join(dir, name), { force: true });
    return written;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Whether `dir` is a directory with at least one entry. */
export async function isNonEmptyDirectory(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch {
    return false;
  }
}

/** Bytes above which `readRegularFile` refuses a file unless told otherwise (the largest tokenizer.json files are tens of MB). */
const MAX_TEXT_FILE_BYTES = 512 * 1024 * 1024;

/**
 * The text of a regular file (symlinks followed: a Hugging Face cache links snapshots/<rev>/f to
 * ../../blobs/<sha>). Anything else (a FIFO, a device, a directory) is refused without reading it:
 * opened with O_NONBLOCK, so opening a FIFO does not wait for a writer, and checked after opening,
 * so what is checked is what is read. Errors are Node's (`code`: ENOENT, ...) or `NotRegularFileError`.
 */
export async function readRegularFile(file: string, maxBytes = MAX_TEXT_FILE_BYTES): Promise<string> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotRegularFileError(`${file} is not a regular file (${fileKind(st)})`);
    if (st.size > maxBytes) throw new NotRegularFileError(`${file} is ${st.size} bytes, more than the ${maxBytes} this file may have`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Opens a regular file for reading (the same checks as `readRegularFile`); the caller closes it. */
export async function openRegularFile(file: string): Promise<FileHandle> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  const st = await fh.stat().catch(async (err: unknown) => {
    await fh.close();
    throw err;
  });
  if (!st.isFile()) {
    await fh.close();
    throw new NotRegularFileError(`${file} is not a regular file (${fileKind(st)})`);
  }
  return fh;
}

export class NotRegularFileError extends Error {
  readonly code = 'ENOTREG';
}

function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a file';
}

/**
 * JSON.parse whose error says where, never what: Node's messages quote the text around the fault,
 * and a file from a stranger may be a link to a secret. Throws SyntaxError("line L, column C") or
 * SyntaxError("unexpected end") with no file content in it.
 */
export function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new SyntaxError(jsonFaultPosition(text));
  }
}

// Where JSON.parse stopped, found again without quoting the text: a small scanner of the grammar.
function jsonFaultPosition(text: string): string {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const lit = (word: string) => {
    for (const ch of word) if (text[i++] !== ch) (i--, fail());
  };
  const str = () => {
    i++;
    while (i < text.length && text[i] !== '"') {
      const c = text.charCodeAt(i);
      if (c < 0x20) fail();
      if (text[i] === '\\') {
        i++;
        if (text[i] === 'u') {
          for (let k = 1; k <= 4; k++) if (!/[0-9a-fA-F]/.test(text[i + k] ?? '')) (i += k, fail());
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? 'x')) fail();
      }
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  const num = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) fail();
    i += m![0].length;
  };
  // Iterative, so a deeply nested file cannot overflow the stack here either.
  const stack: string[] = [];
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      stack.push('}');
      return key();
    }
    if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      stack.push(']');
      return;
    }
    if (c === '"') return str();
    if (c === 't') return lit('true');
    if (c === 'f') return lit('false');
    if (c === 'n') return lit('null');
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return num();
    fail();
  };
  const key = () => {
    ws();
    if (text[i] !== '"') fail();
    str();
    ws();
    if (text[i] !== ':') fail();
    i++;
  };
  try {
    for (;;) {
      const depth = stack.length;
      value();
      if (stack.length > depth) continue; // entered a container: its first value comes next
      for (;;) {
        ws();
        const close = stack[stack.length - 1];
        if (close === undefined) {
          if (i < text.length) fail();
          return 'a construct this reader does not accept';
        }
        if (text[i] === ',') {
          i++;
          if (close === '}') key();
          break;
        }
        if (text[i] !== close) fail();
        i++;
        stack.pop();
      }
    }
  } catch (pos) {
    if (typeof pos !== 'number') throw pos;
    if (pos >= text.length) return 'unexpected end of the file';
    const before = text.slice(0, pos);
    const line = before.split('\n').length;
    return `line ${line}, column ${pos - before.lastIndexOf('\n')}`;
  }
}
