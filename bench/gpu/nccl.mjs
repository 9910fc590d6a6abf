// NCCL on the GPUs, through the engine's own communicator (native/cuda/nccl.cpp, cuda.ncclProbe):
// the in-place all-reduce, reduce-scatter and all-gather checked element by element, then the
// all-reduce timed at each size, with NCCL's bus bandwidth busbw = bytes / time * 2 (n - 1) / n
// (what nccl-tests reports: the traffic each link carries in a ring, comparable across rank counts).
//
//   node bench/gpu/nccl.mjs --smoke                      # one GPU, one rank, no MPI launcher
//   mpirun -np N node bench/gpu/nccl.mjs [--sizes 32M,128M,512M,1G] [--iters 10] [--json file]
//
// Needs dist/ and a CUDA build (as parity.mjs). Exits 0 with a line saying why when there is no
// GPU or no NCCL (the smoke stage of check.sh moves on), 1 when a check fails.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { native, createNativeCommunicator, unwrapNative } = await import(path.join(root, 'dist', 'native', 'binding.js'));

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const smoke = args.includes('--smoke');
const bytesOf = (s) => {
  const m = /^(\d+)([KMG]?)$/i.exec(s.trim());
  if (!m) throw new Error(`Expected sizes like 32M or 1G for \`--sizes\` but received ${JSON.stringify(s)}`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase()];
};
const sizes = opt('--sizes', smoke ? '32M,256M' : '32M,64M,128M,256M,512M,1G').split(',').map(bytesOf);
const iters = Number(opt('--iters', smoke ? '5' : '10'));
const json = opt('--json', '');

const n = native();
if (!n.cuda || n.cuda.deviceCount() === 0) {
  console.log(`nccl: skipped: ${n.cuda ? `no GPU (${n.cuda.unavailableReason()})` : 'this build has no CUDA backend'}`);
  process.exit(0);
}
const lib = n.cuda.ncclLibrary();
if (!lib.loaded) {
  console.log(`nccl: skipped: ${lib.error}`);
  process.exit(0);
}
const launched = ['OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'PMIX_SIZE'].some((k) => process.env[k] !== undefined);
const comm = smoke || !launched ? null : createNativeCommunicator();
const local = Number(process.env.OMPI_COMM_WORLD_LOCAL_RANK ?? process.env.MPI_LOCALRANKID ?? 0);
const device = local % n.cuda.deviceCount();
const t0 = performance.now();
const p = n.cuda.ncclProbe({ device, ...(comm ? { communicator: unwrapNative(comm) } : {}), sizes: Float64Array.from(sizes), iters, timeoutSeconds: 120 });
if (p.rank === 0) {
  console.log(`nccl: ${p.library}, ${p.ranks} rank(s), GPU ${device} of rank 0; collectives ${p.failures.length ? 'FAILED' : 'exact'} (${((performance.now() - t0) / 1000).toFixed(1)} s in all)`);
  for (const f of p.failures) console.log(`nccl: FAIL ${f}`);
  console.log('   bytes   time (ms)   algbw (GB/s)   busbw (GB/s)');
  for (const t of p.timings)
    console.log(`${String(t.bytes / 1024 ** 2).padStart(6)}M ${(t.seconds * 1e3).toFixed(3).padStart(11)} ${t.algbw.toFixed(1).padStart(14)} ${(p.ranks > 1 ? t.busbw.toFixed(1) : '-').padStart(14)}`);
  if (json) writeFileSync(json, JSON.stringify(p, null, 1));
} else if (p.failures.length) {
  console.log(`nccl: rank ${p.rank}: FAIL ${p.failures.join('; ')}`);
}
comm?.finalize();
process.exit(p.failures.length ? 1 : 0);
