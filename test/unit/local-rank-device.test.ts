// Which GPU a rank takes when the user names none (lib/train/distributed.ts, defaultCudaDevice):
// one rank per GPU under mpirun, from the launcher's local rank.
import { describe, expect, it } from 'vitest';

import { defaultCudaDevice, localRank } from '../../lib/train/distributed.js';

describe('one rank per GPU by default', () => {
  it('reads the local rank of Open MPI, MPICH/Hydra and PMIx, and nothing outside a launcher', () => {
    expect(localRank({ OMPI_COMM_WORLD_LOCAL_RANK: '3' })).toBe(3);
    expect(localRank({ MPI_LOCALRANKID: '1' })).toBe(1);
    expect(localRank({ PMIX_LOCAL_RANK: '2' })).toBe(2);
    expect(localRank({})).toBeNull();
    // The global rank is not the local one (rank 9 of a 2-machine job is local rank 1 on 8 GPUs).
    expect(localRank({ OMPI_COMM_WORLD_RANK: '9' })).toBeNull();
    expect(localRank({ OMPI_COMM_WORLD_LOCAL_RANK: 'x' })).toBeNull();
  });

  it('takes the local rank modulo the visible GPUs, else device 0', () => {
    expect(defaultCudaDevice(8, { OMPI_COMM_WORLD_LOCAL_RANK: '5' })).toBe(5);
    expect(defaultCudaDevice(4, { OMPI_COMM_WORLD_LOCAL_RANK: '5' })).toBe(1);
    // CUDA_VISIBLE_DEVICES narrowed to one GPU per rank: that GPU, device 0 of the process.
    expect(defaultCudaDevice(1, { OMPI_COMM_WORLD_LOCAL_RANK: '5' })).toBe(0);
    expect(defaultCudaDevice(8, {})).toBe(0);
    expect(defaultCudaDevice(0, { MPI_LOCALRANKID: '2' })).toBe(0);
  });
});
