#!/usr/bin/env python3
"""The PyTorch side of bench/gpu/check.sh: the same LLaDA-shaped forward, AR rollout and training
steps as bench/gpu/bench.mjs, in plain PyTorch eager on the same card, so report.mjs can print ratios.
Training runs as JustGRPO's own train.py does: fp32 parameters under torch.autocast(bfloat16),
torch.optim.AdamW and gradient clipping.

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
    return forward_rows(W, p, ids, torch.arange(B, device=ids.device) * T + rows, theta)


def forward_rows(W, p, ids, flat_rows, theta=500000.0):
    """Logits (R, vocab) at rows of the flattened (B*T) batch; every layer over every position."""
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
    sel = x.reshape(B * T, p["d"])[flat_rows]
    return rmsnorm(sel, W["ln_f"]) @ W["head"].t()


def train_steps(p, a, layers, dev):
    """Seconds per SFT and JustGRPO step on a model of `layers` layers, as bench.mjs's timeTrain: B x T
    random tokens; SFT's loss on every other row, JustGRPO's on one row per sequence (the clipped
    ratio, the mask id excluded); backward, clipping to norm 1, AdamW."""
    tp = dict(p, layers=layers)
    W = weights(tp, torch.float32, dev)
    params = [W["wte"], W["ln_f"], W["head"]] + [t for L in W["layers"] for t in L.values()]
    for t in params:
        t.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator(device=dev)
    g.manual_seed(3)
    B, T = a.train_batch, a.train_t
    N = B * T
    hi = p["vocab"] - 1000 if p["vocab"] > 2000 else p["vocab"] // 2
    ids = torch.randint(0, hi, (B, T), device=dev, generator=g)
    mask = p["vocab"] - 128
    out = {}
    for kind, R in (("sft", N // 2), ("grpo", B)):
        rows = torch.arange(R, device=dev) * 2 if kind == "sft" else torch.arange(R, device=dev) * T + T // 2
        targets = ids.reshape(-1)[rows]
        w = torch.full((R,), 1.0 / R, device=dev)
        old = torch.full((R,), -5.0, device=dev)
        adv = torch.tensor([1.0 if r % 2 else -1.0 for r in range(R)], device=dev)

        def once():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev, dtype=torch.bfloat16):
                logits = forward_rows(W, tp, ids, rows)
            logits = logits.float()
            if kind == "grpo":
                logits = logits.masked_fill(torch.arange(p["vocab"], device=dev) == mask, -math.inf)
            logp = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
            if kind == "sft":
                loss = -(w * logp).sum()
            else:
                ratio = torch.exp(logp - old)
                loss = -(w * torch.minimum(ratio * adv, ratio.clamp(0.8, 1.28) * adv)).sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        s = timed(once, dev, a.reps)
        flops = 3 * forward_flops(tp, N, T, R)  # backward costs twice the forward's GEMM FLOPs
        out[kind] = {"B": B, "T": T, "rows": R, "layers": layers, "s_per_step": s, "tokens_per_s": N / s,
                     "tflops": flops / s / 1e12}
    del W, params, opt
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


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
    ap.add_argument("--train-layers", type=int, default=2, help="training is timed at 1 and N+1 layers (0: no training)")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-t", type=int, default=512)
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
    del W
    if a.json:  # written before training too, so a time limit hit while training keeps the rest
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if a.train_layers > 0:
        one, more = train_steps(p, a, 1, dev), train_steps(p, a, a.train_layers + 1, dev)
        res["train"] = {}
        for kind in ("sft", "grpo"):
            per_layer = (more[kind]["s_per_step"] - one[kind]["s_per_step"]) / a.train_layers
            fixed = one[kind]["s_per_step"] - per_layer
            res["train"][kind] = dict(more[kind], s_per_layer=per_layer, s_fixed=fixed,
                                      s_per_step_extrapolated=fixed + p["layers"] * per_layer, layers_extrapolated=p["layers"])
            print(f"torch train {kind} B {a.train_batch} T {a.train_t}: {more[kind]['s_per_step'] * 1e3:.1f} ms per step with "
                  f"{a.train_layers + 1} layers; {per_layer * 1e3:.1f} ms per layer, "
                  f"{res['train'][kind]['s_per_step_extrapolated']:.2f} s per step extrapolated to {p['layers']} layers")
    if dev == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
