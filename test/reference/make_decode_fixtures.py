"""Write test/reference/fixtures/decode/decode.json: greedy decodes of the tiny random models.

Every case decodes a prompt drawn from a fixed seed with decode_ref.generate. If a case's smallest
decision margin (see decode_ref.generate) is <= MIN_MARGIN, or a threshold case meant to mix
single and multiple commits does not, the next seed is tried; the seed used is stored. Then
self-checks: an independent batched implementation in the style of LLaDA's / Fast-dLLM's
generate (torch.topk, boolean transfer masks) reproduces every case; the AR-order cases equal a
naive argmax loop; a float32 forward makes the same choices; the schedule counts sum to mask_num. Deterministic (single-threaded, fixed
seeds): running it twice gives the same bytes. Reads the models in fixtures/mha_f32 and
fixtures/gqa_f32 (written by make_fixtures.py) and records their sha256.

    /usr/bin/python3 test/reference/make_decode_fixtures.py
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import decode_ref as dref  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")
OUT_DIR = os.path.join(FIXTURES, "decode")
MODELS = ("mha_f32", "gqa_f32")
MIN_MARGIN = 1e-4
MAX_TRIES = 2000
PROMPT_ID_MAX = 56  # prompt ids are drawn from 0..56 (57 bos, 58 eos, 59 unused, 60 mask)

# name, model, decoder, confidence, gen, block, steps, threshold, cfg_scale, mixed
# `mixed`: a threshold case must, in some step, commit more than one token yet leave masks in the
# block (the tiny random models are flat: max prob ~0.05-0.17, exp(-H) ~0.02-0.03,
# so 0.3 always falls back to one token per step and 0.05 commits nearly everything at once).
CASES = [
    ("ar_mha_g8", "mha_f32", "low_confidence", "probability", 8, 1, 8, None, 0.0, False),
    ("ar_gqa_g8", "gqa_f32", "low_confidence", "probability", 8, 1, 8, None, 0.0, False),
    ("lc_mha_g16_b8_s8", "mha_f32", "low_confidence", "probability", 16, 8, 8, None, 0.0, False),
    ("lc_gqa_g16_b8_s8", "gqa_f32", "low_confidence", "probability", 16, 8, 8, None, 0.0, False),
    ("lc_mha_g12_b4_s6", "mha_f32", "low_confidence", "probability", 12, 4, 6, None, 0.0, False),
    ("lc_gqa_g10_b5_s4", "gqa_f32", "low_confidence", "probability", 10, 5, 4, None, 0.0, False),
    ("lc_mha_g9_b9_s4", "mha_f32", "low_confidence", "probability", 9, 9, 4, None, 0.0, False),
    ("lc_gqa_g16_b16_s5", "gqa_f32", "low_confidence", "probability", 16, 16, 5, None, 0.0, False),
    ("lc_gqa_g4_b4_s6_zero_steps", "gqa_f32", "low_confidence", "probability", 4, 4, 6, None, 0.0,
     False),
    ("lc_margin_mha_g16_b8_s8", "mha_f32", "low_confidence", "margin", 16, 8, 8, None, 0.0, False),
    ("lc_margin_gqa_g12_b4_s6", "gqa_f32", "low_confidence", "margin", 12, 4, 6, None, 0.0, False),
    ("lc_entropy_mha_g16_b8_s8", "mha_f32", "low_confidence", "entropy", 16, 8, 8, None, 0.0, False),
    ("lc_entropy_gqa_g9_b9_s4", "gqa_f32", "low_confidence", "entropy", 9, 9, 4, None, 0.0, False),
    ("thr0.3_mha_g16_b8", "mha_f32", "threshold", "probability", 16, 8, 16, 0.3, 0.0, False),
    ("thr0.05_gqa_g16_b8", "gqa_f32", "threshold", "probability", 16, 8, 16, 0.05, 0.0, False),
    ("thr0.05_mha_g16_b16", "mha_f32", "threshold", "probability", 16, 16, 16, 0.05, 0.0, False),
    ("thr0.12_mha_g16_b8_mixed", "mha_f32", "threshold", "probability", 16, 8, 16, 0.12, 0.0, True),
    ("thr0.07_gqa_g16_b16_mixed", "gqa_f32", "threshold", "probability", 16, 16, 16, 0.07, 0.0, True),
    ("thr_margin0.04_mha_g16_b8_mixed", "mha_f32", "threshold", "margin", 16, 8, 16, 0.04, 0.0, True),
    ("thr_entropy0.026_mha_g16_b8_mixed", "mha_f32", "threshold", "entropy", 16, 8, 16, 0.026, 0.0,
     True),
    ("cfg1_lc_mha_g16_b8_s8", "mha_f32", "low_confidence", "probability", 16, 8, 8, None, 1.0, False),
    ("cfg1_thr0.07_gqa_g16_b8", "gqa_f32", "threshold", "probability", 16, 8, 16, 0.07, 1.0, False),
]

SCHEDULES = [(7, 3), (5, 5), (12, 5), (3, 4), (32, 32), (256, 64), (0, 2), (8, 3), (1, 1), (4, 6),
             (9, 4), (16, 5), (32, 7)]

# (gen_length, block_length, steps, why LLaDA refuses it)
INVALID = [
    (10, 4, 5, "gen_length not a multiple of block_length"),
    (10, 4, 4, "gen_length not a multiple of block_length"),
    (12, 5, 12, "gen_length not a multiple of block_length"),
    (8, 16, 8, "block_length > gen_length (8 % 16 != 0)"),
    (16, 8, 3, "steps not a multiple of num_blocks (2)"),
    (16, 4, 6, "steps not a multiple of num_blocks (4)"),
    (12, 4, 4, "steps not a multiple of num_blocks (3)"),
    (16, 1, 8, "steps not a multiple of num_blocks (16)"),
    (16, 8, 0, "steps must be positive"),
    (16, 0, 16, "block_length must be positive"),
]


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def draw_prompt(seed: int) -> list[int]:
    rng = np.random.RandomState(seed)
    n = int(rng.randint(3, 11))  # 3..10 tokens
    return [int(t) for t in rng.randint(0, PROMPT_ID_MAX + 1, size=n)]


def partial_multi_commit(res: dict, block_length: int) -> bool:
    """Some step commits more than one token but leaves masks in its block (a real threshold mix)."""
    blocks = [pos[0] // block_length for pos in res["positions"]]
    return any(k > 1 and i + 1 < len(blocks) and blocks[i + 1] == blocks[i]
               for i, k in enumerate(res["transfers"]))


# ----------------------------------------------------------------------------------------------
# Independent implementation for the self-check: LLaDA's generate structure (batched x, a boolean
# transfer mask per step, torch.topk), plus Fast-dLLM's threshold selection, with our conventions
# (mask column -inf, float64). With every margin > 1e-4 there are no ties, so topk's tie order
# cannot matter.


def _num_transfer_tokens(block_mask_index: torch.Tensor, steps: int) -> torch.Tensor:
    mask_num = block_mask_index.sum(dim=1, keepdim=True)
    base = mask_num // steps
    remainder = mask_num % steps
    out = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        out[i, :int(remainder[i])] += 1
    return out


@torch.no_grad()
def llada_style_generate(params, cfg, prompt: torch.Tensor, *, steps, gen_length, block_length,
                         cfg_scale, remasking_conf, threshold):
    mask_id = cfg.mask_token_id
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt.clone()
    prompt_index = x != mask_id
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    if threshold is None:
        assert steps % num_blocks == 0
        steps = steps // num_blocks
    nfe = 0

    def model_logits(x):
        nonlocal nfe
        if cfg_scale > 0.0:
            un_x = x.clone()
            un_x[prompt_index] = mask_id
            logits = dref.ref.forward(params, cfg, torch.cat([x, un_x], dim=0))
            logits, un_logits = torch.chunk(logits, 2, dim=0)
            logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            nfe += 2
        else:
            logits = dref.ref.forward(params, cfg, x)
            nfe += 1
        logits = logits.clone()
        logits[:, :, mask_id] = -np.inf
        logits[:, :, cfg.vocab_size:] = -np.inf
        return logits

    def transfer(logits, mask_index, k):
        x0 = torch.argmax(logits, dim=-1)
        p = torch.nn.functional.softmax(logits.to(torch.float64), dim=-1)
        if remasking_conf == "probability":
            x0_p = torch.squeeze(torch.gather(p, dim=-1, index=torch.unsqueeze(x0, -1)), -1)
        elif remasking_conf == "margin":
            sp = torch.sort(p, dim=-1, descending=True).values
            x0_p = sp[..., 0] - sp[..., 1]
        else:
            ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
            x0_p = torch.exp(-ent)
        x0 = torch.where(mask_index, x0, x)
        confidence = torch.where(mask_index, x0_p, torch.tensor(-np.inf, dtype=torch.float64))
        transfer_index = torch.zeros_like(x0, dtype=torch.bool)
        if threshold is None:
            for j in range(confidence.shape[0]):
                if int(k[j]) > 0:
                    _, select_index = torch.topk(confidence[j], k=int(k[j]))
                    transfer_index[j, select_index] = True
        else:
            transfer_index = mask_index & (confidence >= threshold)
            force = torch.zeros_like(transfer_index).scatter_(
                1, torch.argmax(confidence, dim=1, keepdim=True), True)
            transfer_index = (transfer_index | force) & mask_index
        return x0, transfer_index

    P = prompt.shape[1]
    for num_block in range(num_blocks):
        lo, hi = P + num_block * block_length, P + (num_block + 1) * block_length
        if threshold is None:
            num_transfer_tokens = _num_transfer_tokens(x[:, lo:hi] == mask_id, steps)
            for i in range(steps):
                mask_index = x == mask_id
                logits = model_logits(x)
                mask_index[:, hi:] = False
                x0, ti = transfer(logits, mask_index, num_transfer_tokens[:, i])
                x[ti] = x0[ti]
        else:
            while (x[:, lo:hi] == mask_id).any():
                mask_index = x == mask_id
                logits = model_logits(x)
                mask_index[:, hi:] = False
                x0, ti = transfer(logits, mask_index, None)
                x[ti] = x0[ti]
    return x[0, P:].tolist(), nfe


def naive_ar(params, cfg, prompt: list[int], gen_length: int) -> list[int]:
    """JustGRPO's AR-order rollout at T = 0: feed [prompt, x_<t, MASK...], argmax at row P + t."""
    seq = list(prompt) + [cfg.mask_token_id] * gen_length
    P = len(prompt)
    for t in range(gen_length):
        logits = dref.ref.forward(params, cfg, torch.tensor([seq]))[0, P + t].clone()
        logits[cfg.mask_token_id] = -math.inf
        logits[cfg.vocab_size:] = -math.inf
        seq[P + t] = int(torch.argmax(logits))
    return seq[P:]


# ----------------------------------------------------------------------------------------------


def dumps_compact(doc: dict) -> str:
    out = ["{"]
    keys = list(doc)
    for i, k in enumerate(keys):
        v = doc[k]
        sep = "," if i < len(keys) - 1 else ""
        if isinstance(v, list):
            items = ",\n  ".join(json.dumps(c) for c in v)
            out.append(f" {json.dumps(k)}: [\n  {items}\n ]{sep}")
        else:
            out.append(f" {json.dumps(k)}: {json.dumps(v)}{sep}")
    return "\n".join(out) + "\n}\n"


def main() -> None:
    torch.set_num_threads(1)
    models = {m: dref.load_model(os.path.join(FIXTURES, m)) for m in MODELS}
    for cfg, _ in models.values():
        assert cfg.mask_token_id == 60 and cfg.embedding_size == 64

    cases = []
    for idx, (name, model, decoder, conf, gen, block, steps, thr, cfg_scale, mixed) in enumerate(CASES):
        cfg, params = models[model]
        for attempt in range(MAX_TRIES):
            seed = 1000 * (idx + 1) + attempt
            prompt = draw_prompt(seed)
            res = dref.generate(params, cfg, prompt, decoder=decoder, confidence=conf, gen_length=gen,
                                block_length=block, steps=steps, threshold=thr, cfg_scale=cfg_scale)
            if res["min_margin"] <= MIN_MARGIN:
                continue
            if mixed and not partial_multi_commit(res, block):
                continue
            break
        else:
            raise SystemExit(f"{name}: no prompt with margin > {MIN_MARGIN} in {MAX_TRIES} seeds")
        cases.append({"name": name, "model": model, "seed": seed, "prompt": prompt, "decoder": decoder,
                      "confidence": conf, "gen_length": gen, "block_length": block, "steps": steps,
                      "threshold": thr, "cfg_scale": cfg_scale, "tokens": res["tokens"],
                      "nfe": res["nfe"], "transfers": res["transfers"],
                      "positions": res["positions"], "min_margin": res["min_margin"]})
        print(f"{name:36s} seed {seed:6d} (try {attempt + 1:3d}) nfe {res['nfe']:3d} "
              f"transfers {res['transfers']} margin {res['min_margin']:.3e}")

    # ---- self-checks
    for c in cases:
        cfg, params = models[c["model"]]
        tokens, nfe = llada_style_generate(
            params, cfg, torch.tensor([c["prompt"]]), steps=c["steps"], gen_length=c["gen_length"],
            block_length=c["block_length"], cfg_scale=c["cfg_scale"], remasking_conf=c["confidence"],
            threshold=c["threshold"])
        assert tokens == c["tokens"] and nfe == c["nfe"], f"{c['name']}: batched reimplementation differs"
        assert sum(c["transfers"]) == c["gen_length"]
        assert nfe == len(c["transfers"]) * (2 if c["cfg_scale"] > 0 else 1)
        # the same decode with a float32 forward (round-off like the engine's) makes the same choices
        params32 = {k: v.float() for k, v in params.items()}
        r32 = dref.generate(params32, cfg, c["prompt"], decoder=c["decoder"], confidence=c["confidence"],
                            gen_length=c["gen_length"], block_length=c["block_length"],
                            steps=c["steps"], threshold=c["threshold"], cfg_scale=c["cfg_scale"])
        assert r32["tokens"] == c["tokens"] and r32["positions"] == c["positions"], c["name"]
        assert abs(r32["min_margin"] - c["min_margin"]) < 1e-5, c["name"]
        if c["block_length"] == 1 and c["steps"] == c["gen_length"] and c["cfg_scale"] == 0:
            assert naive_ar(params, cfg, c["prompt"], c["gen_length"]) == c["tokens"], c["name"]
    schedules = []
    for mask_num, steps in SCHEDULES:
        counts = dref.schedule(mask_num, steps)
        ref_counts = _num_transfer_tokens(torch.ones(1, mask_num, dtype=torch.bool), steps)[0].tolist()
        assert counts == ref_counts and sum(counts) == mask_num
        schedules.append({"mask_num": mask_num, "steps": steps, "counts": counts})
    invalid = []
    for gen, block, steps, why in INVALID:
        try:
            dref.check_lengths(gen, block, steps)
        except ValueError:
            invalid.append({"gen_length": gen, "block_length": block, "steps": steps, "reason": why})
        else:
            raise AssertionError(f"({gen}, {block}, {steps}) was accepted")

    doc = {
        "note": "Greedy (temperature 0) decodes of the tiny random models by decode_ref.py; "
                "conventions in README.md. Made by /usr/bin/python3 test/reference/make_decode_fixtures.py.",
        "models": {m: {"safetensors_sha256": sha256(os.path.join(FIXTURES, m, "model.safetensors"))}
                   for m in MODELS},
        "min_margin_required": MIN_MARGIN,
        "cases": cases,
        "schedules": schedules,
        "invalid": invalid,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "decode.json"), "w") as f:
        f.write(dumps_compact(doc))
    print(f"{len(cases)} cases, smallest margin {min(c['min_margin'] for c in cases):.3e}; "
          f"self-checks passed; wrote {os.path.relpath(os.path.join(OUT_DIR, 'decode.json'))}")


if __name__ == "__main__":
    main()
