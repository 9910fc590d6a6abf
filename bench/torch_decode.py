"""The PyTorch side of the decoding benchmarks: LLaDA's reference loops in fp32 on the CPU (a full
forward per step with logits for every position, Gumbel-max in float64), timed like the engine.
Prints one JSON line.

usage: torch_decode.py '{"config": {...}, "decoder": "ar"|"low_confidence"|"threshold", "samples": G,
                         "prompt": P, "gen": L, "block": B, "steps": S, "threshold": t, "runs": N,
                         "threads": K}'
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "reference"))
import llada_ref  # noqa: E402


def gumbel_argmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits)
    return (logits.exp() / (-torch.log(noise)) ** temperature).argmax(-1)


def decode(params, cfg, x, prompt_len, spec) -> int:
    """Returns the number of forward passes."""
    mask, gen, T = cfg.mask_token_id, spec["gen"], 1.0
    block = 1 if spec["decoder"] == "ar" else spec["block"]
    steps = gen if spec["decoder"] == "ar" else spec["steps"]
    blocks = gen // block
    nfe = 0
    for b in range(blocks):
        lo, hi = prompt_len + b * block, prompt_len + (b + 1) * block
        n_mask = int((x[0, lo:hi] == mask).sum())
        per = steps // blocks
        schedule = [n_mask // per + (1 if i < n_mask % per else 0) for i in range(per)]
        i = 0
        while (x[:, lo:hi] == mask).any():
            logits = llada_ref.forward(params, cfg, x)
            nfe += 1
            logits[..., mask] = -float("inf")
            x0 = gumbel_argmax(logits, T)
            p = torch.softmax(logits.to(torch.float64), -1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
            masked = x == mask
            conf = torch.where(masked, p, torch.tensor(-float("inf"), dtype=torch.float64))
            conf[:, :lo] = -float("inf")
            conf[:, hi:] = -float("inf")
            for j in range(x.shape[0]):
                if spec["decoder"] == "threshold":
                    order = torch.argsort(conf[j], descending=True)
                    k = 1
                    while k < int(masked[j, lo:hi].sum()) and conf[j, order[k]] >= spec["threshold"]:
                        k += 1
                else:
                    k = schedule[i] if i < len(schedule) else 0
                if k > 0:
                    idx = torch.topk(conf[j], k).indices
                    x[j, idx] = x0[j, idx]
            i += 1
            if spec["decoder"] != "threshold" and i == per:
                break
    return nfe


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    cfg = llada_ref.Config.from_dict(spec["config"])
    params = llada_ref.random_params(cfg, seed=0, dtype=torch.float32)
    prompt = torch.randint(0, cfg.mask_token_id, (spec["samples"], spec["prompt"]))
    times, nfe = [], 0
    with torch.inference_mode():
        for r in range(spec["runs"] + 1):
            x = torch.cat([prompt, torch.full((spec["samples"], spec["gen"]), cfg.mask_token_id)], 1)
            t0 = time.perf_counter()
            nfe = decode(params, cfg, x, spec["prompt"], spec)
            if r > 0:
                times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "times": times, "nfe": nfe}))


if __name__ == "__main__":
    main()
