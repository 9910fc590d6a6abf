// The library in a few calls: load a model, read logits, decode, save. Runs as is with the shipped
// tiny model (node examples/library.mjs), or with any LLaDA directory given as the argument.
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadModel } from 'justgrpo';

const dir = process.argv[2] ?? fileURLToPath(new URL('../models/arith-demo', import.meta.url));
const model = await loadModel(dir, { backend: 'cpu' });

// A user message in the model's chat template when its tokenizer has one (the shipped model reads
// raw questions).
const question = 'Ann has 8 apples, wins 5, buys 7. How many apples?';
const tok = model.tokenizer;
const ids = tok.hasChatTemplate ? tok.encodeChat([{ role: 'user', content: question }]) : tok.encode(question);

const logits = await model.logits([ids]); // Float32Array [1, T, embeddingSize], fp32
const last = await model.logitsAt([ids], [[ids.length - 1]]); // only the rows you need
console.log(`logits: ${logits.length} values; last row: ${last.length}`);

// LLaDA's low-confidence remasking, blocks of 8, one token per step; and the AR-order rollout JustGRPO trains with.
const parallel = await model.generate(ids, { decoder: 'low_confidence', genLength: 32, blockLength: 8 });
const ar = await model.generate(ids, { decoder: 'ar', genLength: 32, temperature: 1, numSamples: 2, seed: 1 });
console.log(`low_confidence: ${JSON.stringify(model.completionText(parallel.tokens[0]))}`);
console.log(`ar, T=1: ${ar.tokens.map((t) => JSON.stringify(model.completionText(t))).join(', ')}`);

const out = await mkdtemp(path.join(os.tmpdir(), 'justgrpo-copy-'));
await model.save(out, { dtype: 'BF16' }); // a Hugging Face directory; files already there stay
console.log(`saved to ${out}`);
await model.dispose();
