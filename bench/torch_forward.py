"""The PyTorch side of `npm run bench`: the reference LLaDA forward (test/reference/llada_ref.py)
in fp32 on the CPU, timed the same way as the engine. Prints one JSON line.

usage: torch_forward.py '{"config": {...LLaDA config.json fields...}, "batch": B, "seq": T,
                          "runs": N, "threads": K}'
OpenBLAS's thread count comes from the environment (OPENBLAS_NUM_THREADS), set by the caller.
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "reference"))
import llada_ref  # noqa: E402


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    cfg = llada_ref.Config.from_dict(spec["config"])
    params = llada_ref.random_params(cfg, seed=0, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (spec["batch"], spec["seq"]), generator=g)
    times = []
    with torch.inference_mode():
        llada_ref.forward(params, cfg, ids)  # warm-up
        for _ in range(spec["runs"]):
            t0 = time.perf_counter()
            llada_ref.forward(params, cfg, ids)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "times": times, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
