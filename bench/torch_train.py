"""The PyTorch side of the training benchmarks, the same algorithms as the engine in fp32 on the CPU:
 - "sft": one masked-diffusion SFT step (forward, cross-entropy at the masked positions weighted
   1 / p_mask / length, backward, AdamW) on `batch` sequences of `seq` tokens;
 - "grpo": one JustGRPO step as its reference loops it: the AR rollout (one full forward per token,
   Gumbel-max in float64), then for each position t one forward + backward of the G inputs
   [prompt, x_<t, MASK...] at row P + t with the clipped-ratio loss, then grad clipping and AdamW.
With "autocast": true, every forward (and the loss) runs under torch.autocast('cpu', bfloat16), as
JustGRPO's train.py runs: bf16 matmuls (oneDNN) with fp32 weights and optimizer.
Prints one JSON line. usage: torch_train.py '{"task": "sft"|"grpo", "config": {...}, ...}'
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test", "reference"))
import llada_ref  # noqa: E402


def sft_step(params, cfg, opt, ids, g):
    t = torch.rand(ids.shape[0], 1, generator=g)
    p_mask = (1 - 1e-3) * t + 1e-3
    masked = torch.rand(ids.shape, generator=g) < p_mask
    x = torch.where(masked, torch.full_like(ids, cfg.mask_token_id), ids)
    logits = llada_ref.forward(params, cfg, x)
    ce = torch.nn.functional.cross_entropy(logits[masked], ids[masked], reduction="none")
    loss = (ce / p_mask.expand_as(ids)[masked]).sum() / (ids.shape[0] * ids.shape[1])
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
    opt.step()


def grpo_step(params, cfg, opt, prompt, G, L, g):
    mask = cfg.mask_token_id
    P = prompt.shape[0]
    x = torch.cat([prompt.repeat(G, 1), torch.full((G, L), mask)], 1)
    old = torch.zeros(G, L)
    with torch.no_grad():
        for t in range(L):
            logits = llada_ref.forward(params, cfg, x)[:, P + t].double()
            logits[:, mask] = -float("inf")
            u = torch.rand(logits.shape, generator=g, dtype=torch.float64)
            tok = (logits - torch.log(-torch.log(u))).argmax(-1)
            old[:, t] = torch.log_softmax(logits, -1).gather(-1, tok[:, None])[:, 0].float()
            x[:, P + t] = tok
    rewards = (x[:, P:] % 2 == 0).float().mean(1)
    adv = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
    valid = max(1, int((adv != 0).sum()))
    opt.zero_grad()
    for t in range(L):
        inp = x.clone()
        inp[:, P + t:] = mask
        logits = llada_ref.forward(params, cfg, inp)[:, P + t]
        logits = logits.masked_fill(torch.arange(logits.shape[-1]) == mask, -float("inf"))
        logp = torch.log_softmax(logits, -1).gather(-1, x[:, P + t, None])[:, 0]
        ratio = torch.exp(logp - old[:, t])
        loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).sum() / L / valid
        loss.backward()
    torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
    opt.step()


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("autocast"):
        # The forward passes of both steps go through llada_ref.forward: wrapping it covers the
        # rollout, the loss and (autograd follows the forward's dtypes) the backward.
        plain = llada_ref.forward

        def forward(*args):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return plain(*args).float()

        llada_ref.forward = forward
    torch.set_num_threads(spec["threads"])
    cfg = llada_ref.Config.from_dict(spec["config"])
    params = {k: v.requires_grad_() for k, v in llada_ref.random_params(cfg, seed=0, dtype=torch.float32).items()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    if spec["task"] == "sft":
        ids = torch.randint(0, cfg.mask_token_id, (spec["batch"], spec["seq"]), generator=g)
        step = lambda: sft_step(params, cfg, opt, ids, g)  # noqa: E731
    else:
        prompt = torch.randint(0, cfg.mask_token_id, (spec["prompt"],), generator=g)
        step = lambda: grpo_step(params, cfg, opt, prompt, spec["samples"], spec["gen"], g)  # noqa: E731
    times = []
    for r in range(spec["runs"] + (1 if spec.get("warmup", True) else 0)):
        t0 = time.perf_counter()
        step()
        if r > 0 or not spec.get("warmup", True):
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median_s": statistics.median(times), "times": times}))


if __name__ == "__main__":
    main()
