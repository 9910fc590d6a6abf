// Run by every rank of test/native/zero.test.ts's collective test: ZeRO-1's reduce-scatter and
// all-gather (MpiGradComm, as a Training step calls them) on blocks of several sizes, each rank
// checking its own result exactly (the values are small integers: sums are exact in fp32). Prints
// one JSON line {rank, size, checked, wrong: [...]} and exits 0 when nothing was wrong.
import { createNativeCommunicator } from '../../dist/native/binding.js';

const comm = createNativeCommunicator();
const { rank, size } = comm;
const wrong = [];
let checked = 0;
for (const block of [1, 5, 64, 1000]) {
  // Rank r's element i is (r + 1) * (i % 97 + 1): block k sums to (1 + ... + size) * (i % 97 + 1).
  const data = Float32Array.from({ length: size * block }, (_, i) => (rank + 1) * ((i % 97) + 1));
  await comm.reduceScatterF32(data, 30);
  const ranksSum = (size * (size + 1)) / 2;
  for (let j = 0; j < block; j++) {
    const i = rank * block + j;
    checked++;
    if (data[i] !== ranksSum * ((i % 97) + 1)) wrong.push(`reduce-scatter block ${block}: element ${i} is ${data[i]}`);
  }
  // Only this rank's block is set; the gather must fill every other block from its owner.
  const gathered = new Float32Array(size * block).fill(Number.NaN);
  for (let j = 0; j < block; j++) gathered[rank * block + j] = 1000 * rank + j;
  await comm.allGatherF32(gathered, 30);
  for (let i = 0; i < size * block; i++) {
    checked++;
    const want = 1000 * Math.floor(i / block) + (i % block);
    if (gathered[i] !== want) wrong.push(`all-gather block ${block}: element ${i} is ${gathered[i]}, expected ${want}`);
  }
}
console.log(JSON.stringify({ rank, size, checked, wrong: wrong.slice(0, 5) }));
comm.finalize();
process.exitCode = wrong.length === 0 ? 0 : 1;
