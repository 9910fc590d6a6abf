// Tokenizer files from strangers that must not crash or freeze a run: a chat template that
// allocates until V8 dies (which killed the process, uncatchably), templates that loop for ever,
// and a pre-tokenizer regular expression that backtracks for ever on an ordinary prompt. Each
// fails with one error naming the file, within the sandbox's limits, and the process goes on.
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CheckpointError, Tokenizer, charTokenizerFiles } from '../../lib/index.js';
import { sandboxLimits, setSandboxLimits } from '../../lib/tokenizer.js';
import { tmpDir } from '../helpers/tmp.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const DEMO = path.join(root, 'models', 'arith-demo');
const tmp = tmpDir();
let n = 0;

const files = charTokenizerFiles();
const charJson = () => JSON.parse(files['tokenizer.json']!) as Record<string, unknown>;
const charConfig = () => JSON.parse(files['tokenizer_config.json']!) as Record<string, unknown>;
const withTemplate = (chat_template: string) => Tokenizer.fromJSON(charJson(), { ...charConfig(), chat_template }, `/models/t${n++}`);

// A pre-tokenizer whose regular expression backtracks exponentially in the words of a prompt that
// does not end in a word character (2 s at 41 characters in-process, doubling every two).
const BACKTRACKING = { type: 'Split', pattern: { Regex: '^(\\w+\\s?)*$' }, behavior: 'Isolated', invert: false };
const PROMPT = 'What is twelve plus thirty and what is that times two?';

const before = sandboxLimits();
beforeAll(() => setSandboxLimits({ timeMs: 1500 }));
afterAll(() => setSandboxLimits(before));

/** Runs `fn`, which must throw; returns the error and the seconds it took. */
function timed(fn: () => unknown): { err: Error; seconds: number } {
  const t0 = performance.now();
  try {
    fn();
  } catch (err) {
    return { err: err as Error, seconds: (performance.now() - t0) / 1000 };
  }
  throw new Error('it did not throw');
}

describe('chat templates that loop or allocate without end', () => {
  it('range(1000000000): stopped at the memory limit with one error naming the file; the process lives', () => {
    const t = withTemplate('{% for i in range(1000000000) %}x{% endfor %}');
    const { err, seconds } = timed(() => t.applyChatTemplate([{ role: 'user', content: 'hi' }]));
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/^\/models\/t\d+\/tokenizer_config\.json: rendering `chat_template` went past the limits of 1\.5 s and \d+ MiB and was stopped/);
    expect(seconds).toBeLessThan(20);
  });

  it('nested loops: stopped at the time limit', () => {
    const t = withTemplate('{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}');
    const { err, seconds } = timed(() => t.encodeChat([{ role: 'user', content: 'hi' }]));
    expect(err.message).toMatch(/tokenizer_config\.json: rendering `chat_template` and tokenizing went past the limits/);
    expect(seconds).toBeGreaterThan(1.4);
    expect(seconds).toBeLessThan(10);
  });

  it('a string doubled 60 times: an error, not a crash', () => {
    const t = withTemplate('{% set ns = namespace(s="ab") %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}');
    expect(() => t.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/tokenizer_config\.json: rendering `chat_template` (failed: .*Invalid string length|went past the limits)/);
  });

  it('a tokenizer that was stopped fails fast from then on; the others keep working', () => {
    const bad = withTemplate('{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}');
    const good = withTemplate('{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}');
    expect(() => bad.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(/went past the limits/);
    const again = timed(() => bad.applyChatTemplate([{ role: 'user', content: 'hi' }]));
    expect(again.err.message).toMatch(/went past the limits/);
    expect(again.seconds).toBeLessThan(0.1);
    // `good` was loaded in the worker that was stopped: it is loaded again into the next one.
    expect(good.applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<|startoftext|>hi');
    expect(good.encode('12')).toEqual([good.tokenToId('1'), good.tokenToId('2')]);
  });
});

describe('a pre-tokenizer regular expression that backtracks', () => {
  it('encode of an ordinary prompt is stopped at the time limit with the file named', () => {
    const t = Tokenizer.fromJSON({ ...charJson(), pre_tokenizer: BACKTRACKING }, charConfig(), '/models/regex');
    expect(t.encode('12 + 3 = 15 ok')).toHaveLength(14);
    const { err, seconds } = timed(() => t.encode(PROMPT));
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/^\/models\/regex\/tokenizer\.json: tokenizing a text went past the limits of 1\.5 s and \d+ MiB and was stopped \(a regular expression that backtracks without end\?\); this tokenizer is unusable$/);
    expect(seconds).toBeLessThan(10);
  });
});

describe('the CLI', () => {
  it('generate with a range(1000000000) template exits 1 with one line (it died with exit 133)', () => {
    const dir = path.join(tmp, 'bomb');
    cpSync(DEMO, dir, { recursive: true, filter: (src) => !/\/(data|recipe)$/.test(src) });
    const cfg = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, chat_template: '{% for i in range(1000000000) %}x{% endfor %}' }));
    const r = spawnSync(process.execPath, [cli, 'generate', '--model', dir, '--prompt', 'What is 2+3?', '--gen-length', '4'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^justgrpo: ${dir}/tokenizer_config\\.json: rendering \`chat_template\` and tokenizing went past the limits of 10 s and \\d+ MiB and was stopped .*\\n$`));
  });
});

describe('batched calls', () => {
  it('encodeBatch and encodeChatBatch give what encode and encodeChat give, one by one', () => {
    const t = Tokenizer.fromJSON(charJson(), charConfig(), '/models/batch');
    const texts = Array.from({ length: 600 }, (_, i) => `Sam has ${i} pens, buys ${i % 7}. How many pens?`);
    expect(t.encodeBatch(texts)).toEqual(texts.map((x) => t.encode(x)));
    const chats = texts.slice(0, 300).map((x) => [{ role: 'user', content: x }]);
    expect(t.encodeChatBatch(chats)).toEqual(chats.map((c) => t.encodeChat(c)));
    expect(t.encodeChat(chats[0]!)).toEqual(t.encode(t.applyChatTemplate(chats[0]!)));
  });
});

describe('batched decode', () => {
  it('decodeBatch gives what decode gives, empty lists included', () => {
    const t = Tokenizer.fromJSON(charJson(), charConfig(), '/models/decode');
    const lists = [[], ...Array.from({ length: 300 }, (_, i) => t.encode(`<|startoftext|>${i} pens<|eot_id|>`))];
    for (const skipSpecialTokens of [false, true])
      expect(t.decodeBatch(lists, { skipSpecialTokens })).toEqual(lists.map((ids) => t.decode(ids, { skipSpecialTokens })));
  });
});
