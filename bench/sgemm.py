"""OpenBLAS's sgemm rate (through numpy, whose BLAS is the system's OpenBLAS) on a list of GEMM shapes:
the reference the engine's GEMMs are measured against. Input (argv[1], JSON): {"shapes": [[M, K, N, count],
...], "runs": R}. Prints {"gflops": rate of running every shape `count` times, median over R runs}.
Thread count from OPENBLAS_NUM_THREADS, as the caller sets it."""
import json
import sys
import time

import numpy as np

spec = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
mats = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32), count)
        for m, k, n, count in spec["shapes"]]
flops = sum(2.0 * a.shape[0] * a.shape[1] * b.shape[1] * c for a, b, c in mats)
times = []
for r in range(spec["runs"] + 1):
    t0 = time.perf_counter()
    for a, b, c in mats:
        for _ in range(c):
            a @ b
    if r > 0:  # the first run warms up
        times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"gflops": flops / times[len(times) // 2] / 1e9}))
