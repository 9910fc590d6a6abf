#!/usr/bin/env python3
"""The PyTorch side of bench/gpu/check.sh: the same LLaDA-shaped forward and AR rollout as
bench/gpu/bench.mjs, in plain PyTorch eager on the same card, so report.mjs can print ratios.

The block follows DESIGN.md (RMSNorm in fp32, rotate-half RoPE, bidirectional attention through
F.scaled_dot_product_attention, SwiGLU with ff_proj gated); random bf16 weights made on the device;
CUDA events around each timed call, median of repeats after a warm-up.

  python3 bench/gpu/torch_bench.py --json torch.json                           # LLaDA-8B shapes on the GPU
  /usr/bin/python3 bench/gpu/torch_bench.py --device cpu --preset tiny --dtype float32 --json t.json  # dry run
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

PRESETS = {  # as bench/gpu/shapes.mjs
    "llada8b": dict(d=4096, layers=32, heads=32, kv=32, mlp=12288, vocab=126464),
    "small": dict(d=1024, layers=8, heads=16, kv=16, mlp=2816, vocab=32768),
    "tiny": dict(d=128, layers=2, heads=4, kv=4, mlp=256, vocab=512),
}


def weights(p, dtype, device):
    g = torch.Generator(device=device)
    g.manual_seed(0)
    hd = p["d"] // p["heads"]

    def mat(rows, cols):
        return (torch.randn(rows, cols, generator=g, device=device) * 0.02).to(dtype)

    ones = lambda: torch.ones(p["d"], device=device, dtype=dtype)
    W = {"wte": mat(p["vocab"], p["d"]), "ln_f": ones(), "head": mat(p["vocab"], p["d"]), "layers": []}
    for _ in range(p["layers"]):
        W["layers"].append(dict(
            attn_norm=ones(), q=mat(p["d"], p["d"]), k=mat(p["kv"] * hd, p["d"]), v=mat(p["kv"] * hd, p["d"]),
            o=mat(p["d"], p["d"]), ff_norm=ones(), gate=mat(p["mlp"], p["d"]), up=mat(p["mlp"], p["d"]),
            down=mat(p["d"], p["mlp"])))
    return W


def rmsnorm(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    xf = x.float()
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], -1)
    return (xf * cos + rotated * sin).to(x.dtype)


def attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # torch < 2.0
    return torch.matmul(torch.softmax(s, -1), v.float()).to(q.dtype)


def forward(W, p, ids, rows, theta=500000.0):
    """Logits (B, vocab) at one row per sequence; every layer over every position."""
    B, T = ids.shape
    hd = p["d"] // p["heads"]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, device=ids.device, dtype=torch.float32) / hd)
    ang = torch.outer(torch.arange(T, device=ids.device, dtype=torch.float32), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x = W["wte"][ids]
    for L in W["layers"]:
        h = rmsnorm(x, L["attn_norm"])
        q = (h @ L["q"].t()).view(B, T, p["heads"], hd).transpose(1, 2)
        k = (h @ L["k"].t()).view(B, T, p["kv"], hd).transpose(1, 2)
        v = (h @ L["v"].t()).view(B, T, p["kv"], hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if p["kv"] != p["heads"]:
            k = k.repeat_interleave(p["heads"] // p["kv"], 1)
            v = v.repeat_interleave(p["heads"] // p["kv"], 1)
        x = x + attention(q, k, v).transpose(1, 2).reshape(B, T, p["d"]) @ L["o"].t()
        h = rmsnorm(x, L["ff_norm"])
        x = x + (F.silu(h @ L["gate"].t()) * (h @ L["up"].t())) @ L["down"].t()
    sel = x[torch.arange(B, device=ids.device), rows]
    return rmsnorm(sel, W["ln_f"]) @ W["head"].t()


def timed(fn, device, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        if device == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            ts.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def forward_flops(p, tokens, T, rows):  # as bench/gpu/shapes.mjs
    hd = p["d"] // p["heads"]
    per_token = 2 * (2 * p["d"] * p["d"] + 2 * p["d"] * p["kv"] * hd + 3 * p["d"] * p["mlp"])
    return p["layers"] * tokens * (per_token + 4 * T * p["d"]) + 2 * rows * p["d"] * p["vocab"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llada8b", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seqs", default="512,1024")
    ap.add_argument("--prompt", type=int, default=100)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="rollout steps timed (extrapolated to --gen)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gemm", type=int, default=8192, help="size of the square bf16 GEMM that measures the card's peak")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    p, dev, dt = PRESETS[a.preset], a.device, getattr(torch, a.dtype)
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    res = {"engine": "pytorch", "torch": torch.__version__, "preset": a.preset, "dtype": a.dtype,
           "device_name": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "forward": [], "decode": {}}
    n = a.gemm if dev == "cuda" else 512
    A = torch.randn(n, n, device=dev).to(dt)
    Bm = torch.randn(n, n, device=dev).to(dt)
    res["gemm_n"] = n
    res["gemm_tflops"] = 2 * n ** 3 / timed(lambda: A @ Bm, dev, max(a.reps, 5)) / 1e12
    del A, Bm
    W = weights(p, dt, dev)
    hi = p["vocab"] - 1000 if p["vocab"] > 2000 else p["vocab"] // 2  # ordinary ids, below the special ones
    g = torch.Generator(device=dev)
    g.manual_seed(1)
    with torch.no_grad():
        for T in [int(s) for s in a.seqs.split(",")]:
            ids = torch.randint(0, hi, (a.batch, T), device=dev, generator=g)
            rows = torch.full((a.batch,), T - 1, device=dev, dtype=torch.long)
            s = timed(lambda: forward(W, p, ids, rows), dev, a.reps)
            f = forward_flops(p, a.batch * T, T, a.batch)
            res["forward"].append({"B": a.batch, "T": T, "s": s, "tokens_per_s": a.batch * T / s, "tflops": f / s / 1e12})
            print(f"torch forward B {a.batch} T {T}: {a.batch * T / s:.0f} tok/s, {f / s / 1e12:.1f} TFLOP/s ({s * 1e3:.1f} ms)")

        # The AR rollout, as JustGRPO runs it: one full forward per generated token, Gumbel-max in fp64
        # at temperature 1 with the mask token excluded; `steps` steps timed, extrapolated.
        T = a.prompt + a.gen
        mask = p["vocab"] - 128
        x = torch.randint(0, hi, (a.batch, T), device=dev, generator=g)
        x[:, a.prompt:] = mask

        def rollout():
            for t in range(a.steps):
                pos = a.prompt + t
                logits = forward(W, p, x, torch.full((a.batch,), pos, device=dev, dtype=torch.long)).double()
                logits[:, mask] = -math.inf
                u = torch.rand(logits.shape, device=dev, dtype=torch.float64, generator=g).clamp_min(1e-300)
                x[:, pos] = (logits - torch.log(-torch.log(u))).argmax(-1)

        s = timed(rollout, dev, max(1, a.reps - 1)) / a.steps
        res["decode"]["ar"] = {"G": a.batch, "prompt": a.prompt, "gen": a.gen, "steps_timed": a.steps, "s_per_step": s,
                               "tokens_per_step": a.batch, "tokens_per_s": a.batch / s}
        print(f"torch AR rollout G {a.batch}: {a.batch / s:.1f} tok/s ({s * 1e3:.1f} ms per step)")
    if dev == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
