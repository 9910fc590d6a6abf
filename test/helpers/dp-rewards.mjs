// Reward functions for the data-parallel tests (test/native/distributed.test.ts), loaded by every
// rank through rewardModule. `digits` scores like examples/rewards/toy.mjs and also records the
// token ids each rank sampled (DP_RECORD.<rank>, one JSON line per step) and, with DP_FAULT
// ("kill:<rank>:<call>" or "stop:<rank>:<call>"), kills or freezes one rank at one of its calls.
import { appendFileSync } from 'node:fs';

const rank = Number(process.env.OMPI_COMM_WORLD_RANK ?? process.env.PMI_RANK ?? 0);
let calls = 0;

export function digits({ completions, completionIds }) {
  calls++;
  if (process.env.DP_RECORD) appendFileSync(`${process.env.DP_RECORD}.${rank}`, JSON.stringify(completionIds) + '\n');
  if (process.env.DP_FAULT) {
    const [what, r, at] = process.env.DP_FAULT.split(':');
    if (Number(r) === rank && Number(at) === calls) process.kill(process.pid, what === 'kill' ? 'SIGKILL' : 'SIGSTOP');
  }
  return completions.map((c) => (c.length === 0 ? 0 : [...c].filter((ch) => ch >= '0' && ch <= '9').length / c.length));
}
