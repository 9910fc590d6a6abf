"""The PyTorch side of `node bench/run.mjs --only llada8b`: one forward over one sequence of a
LLaDA-8B-shaped model with 2 of its 32 layers, on the CPU, through the reference forward
(test/reference/llada_ref.py), timed with 1 and with 2 layers so the difference is one layer's time.
Prints one JSON line.

usage: torch_llada8b.py '{"config": {...config.json fields, n_layers 2...}, "seq": T, "runs": N,
                          "threads": K, "mode": "autocast" | "bf16"}'

mode "autocast": fp32 weights and torch.autocast('cpu', bfloat16), as JustGRPO's train.py runs
(each product casts its weight to bf16 on every call). mode "bf16": the weights stored in bf16 and
everything computed in bf16, PyTorch's cheapest bf16 inference. The weights are N(0, 0.02) drawn in
fp32 directly (the reference's float64 draws would need 4 GB for the head alone); their values do
not change the time.
"""
import dataclasses
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
    dtype = torch.bfloat16 if spec["mode"] == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, shape in llada_ref.param_shapes(cfg).items():
        t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
        params[name] = t.to(dtype)
    ids = torch.randint(0, cfg.vocab_size, (1, spec["seq"]), generator=gen)
    # The same weights with the first layer only: cfg.n_layers bounds the forward's loop.
    cfgs = {n: dataclasses.replace(cfg, n_layers=n) for n in (1, cfg.n_layers)}

    def run(n: int) -> float:
        t0 = time.perf_counter()
        if spec["mode"] == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                llada_ref.forward(params, cfgs[n], ids).float()
        else:
            llada_ref.forward(params, cfgs[n], ids).float()
        return time.perf_counter() - t0

    times = {n: [] for n in cfgs}
    with torch.inference_mode():
        for n in cfgs:
            run(n)  # warm-up
        for _ in range(spec["runs"]):
            for n in cfgs:  # alternately, so load from other work hits both alike
                times[n].append(run(n))
    one, full = statistics.median(times[1]), statistics.median(times[cfg.n_layers])
    print(json.dumps({"median_s": full, "one_layer_s": one, "layers": cfg.n_layers, "times": times,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
