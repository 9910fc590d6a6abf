// Writes examples/data/arith-tiny.jsonl: 512 one-step addition and subtraction problems in GSM8K's
// answer format, from a fixed seed, for examples/sft-tiny.json. Run: node examples/make-arith-tiny.mjs
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let s = 12345;
const rand = (n) => {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  return (s >>> 8) % n;
};
const lines = [];
for (let i = 0; i < 512; i++) {
  const a = rand(50), b = rand(50);
  const add = rand(2) === 0;
  const [x, y] = add ? [a, b] : [Math.max(a, b), Math.min(a, b)];
  const c = add ? x + y : x - y;
  const op = add ? '+' : '-';
  lines.push(JSON.stringify({ prompt: `What is ${x} ${op} ${y}?`, response: `${x} ${op} ${y} = ${c}\n#### ${c}` }));
}
const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'data', 'arith-tiny.jsonl');
writeFileSync(out, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} examples to ${out}`);
