"""PyTorch reference for the parallel (and AR-order) decoders of a LLaDA masked diffusion LM.

A re-implementation, written for clarity, of LLaDA's `generate` (semi-autoregressive block decoding
with low-confidence remasking; github.com/ML-GSAI/LLaDA, generate.py) and of Fast-dLLM's threshold
rule (commit every masked position of the current block whose confidence >= threshold, always at
least the most confident one), with the exact conventions the engine implements
(see fixtures/decode/README.md):

- x = [prompt, MASK * gen_length]; one full forward per step (no cache); logits in float64.
- The mask token is never predicted: logits[..., mask_token_id] = -inf before anything else.
  (LLaDA's code can predict it; we deliberately do not.) Nor are the columns at or past
  vocab_size (embedding padding; for LLaDA-8B vocab_size = embedding_size, so none).
- Greedy only (temperature 0): x0 = argmax over the vocab_size columns, ties to the lowest id.
- p = softmax(logits) in float64, mask excluded. Confidence of a masked position in the current
  block: 'probability' p[x0]; 'margin' top1 - top2 prob; 'entropy' exp(-H). Elsewhere -inf.
- Per block LLaDA's schedule (`schedule()`); low_confidence commits the k most confident masked
  positions of the block, ties to the lower position. A step whose count is 0 (steps per block >
  masked positions) still runs its forward pass, as LLaDA's loop does.
- threshold: ignores `steps`; per block, repeat until the block has no mask: sort the block's masked
  positions by confidence (descending, ties to the lower position), commit the first always and
  every further one whose confidence >= threshold.
- cfg_scale > 0: a second forward on x with the prompt positions replaced by MASK;
  logits = un + (cfg_scale + 1) * (cond - un), then the mask exclusion. NFE counts both passes.

Every decode also reports the smallest decision margin it met (see `generate`), so fixtures can be
chosen far from any tie that float32 round-off in the engine could flip.

Run with Debian's interpreter, which has torch: `/usr/bin/python3`.
"""

from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llada_ref as ref  # noqa: E402

DECODERS = ("low_confidence", "threshold")
CONFIDENCES = ("probability", "margin", "entropy")


def schedule(mask_num: int, steps: int) -> list[int]:
    """LLaDA's get_num_transfer_tokens for one sequence: tokens committed at each of `steps` steps.

    base = mask_num // steps, the remainder (mask_num % steps) goes one each to the first steps.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if mask_num < 0:
        raise ValueError(f"mask_num must be >= 0, got {mask_num}")
    base, remainder = divmod(mask_num, steps)
    return [base + (1 if i < remainder else 0) for i in range(steps)]


def check_lengths(gen_length: int, block_length: int, steps: int | None,
                  decoder: str = "low_confidence") -> tuple[int, int | None]:
    """(num_blocks, steps_per_block) or ValueError, as LLaDA's asserts (steps unused by threshold)."""
    if gen_length <= 0:
        raise ValueError(f"gen_length must be positive, got {gen_length}")
    if block_length <= 0:
        raise ValueError(f"block_length must be positive, got {block_length}")
    if gen_length % block_length != 0:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    num_blocks = gen_length // block_length
    if decoder == "threshold":
        return num_blocks, None
    if steps is None or steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if steps % num_blocks != 0:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({num_blocks} = "
                         f"gen_length {gen_length} / block_length {block_length})")
    return num_blocks, steps // num_blocks


def load_model(path: str) -> tuple[ref.Config, dict[str, torch.Tensor]]:
    """Config and float64 weights (upcast from the stored dtype) of a checkpoint directory."""
    cfg_dict, params = ref.load_hf_dir(path)
    return ref.Config.from_dict(cfg_dict), {k: v.double() for k, v in params.items()}


def step_logits(params: dict, cfg: ref.Config, x: torch.Tensor, prompt_len: int,
                cfg_scale: float) -> tuple[torch.Tensor, int]:
    """Logits [T, V] (float64, mask column = -inf) for sequence x [T], and the forwards used."""
    if cfg_scale > 0:
        un_x = x.clone()
        un_x[:prompt_len] = cfg.mask_token_id
        both = ref.forward(params, cfg, torch.stack([x, un_x]))
        cond, un = both[0], both[1]
        logits = un + (cfg_scale + 1) * (cond - un)
        nfe = 2
    else:
        logits = ref.forward(params, cfg, x[None])[0]
        nfe = 1
    logits = logits.double().clone()
    logits[:, cfg.mask_token_id] = -math.inf
    logits[:, cfg.vocab_size:] = -math.inf  # embedding padding columns are not tokens
    return logits, nfe


def confidence_of(logits: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0 [T], confidence [T], top1-top2 logit gap [T]) for logits [T, V] (mask already -inf)."""
    # torch.argmax returns the first maximal index: ties go to the lowest id
    x0 = torch.argmax(logits, dim=-1)
    top2_logits = torch.topk(logits, 2, dim=-1).values
    logit_gap = top2_logits[:, 0] - top2_logits[:, 1]
    p = torch.softmax(logits.double(), dim=-1)  # the mask column is exactly 0
    if mode == "probability":
        conf = p.gather(-1, x0[:, None])[:, 0]
    elif mode == "margin":
        top2 = torch.topk(p, 2, dim=-1).values
        conf = top2[:, 0] - top2[:, 1]
    elif mode == "entropy":
        plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))),
                            torch.zeros_like(p))
        conf = torch.exp(plogp.sum(dim=-1))  # exp(-H), H = -sum p log p
    else:
        raise ValueError(f"unknown confidence {mode!r}; expected one of {CONFIDENCES}")
    return x0, conf, logit_gap


@torch.no_grad()
def generate(params: dict, cfg: ref.Config, prompt: list[int], *, decoder: str = "low_confidence",
             confidence: str = "probability", gen_length: int = 128, block_length: int = 128,
             steps: int | None = 128, threshold: float | None = None, cfg_scale: float = 0.0,
             temperature: float = 0.0) -> dict:
    """Greedy decode; returns {"tokens", "nfe", "transfers", "positions", "min_margin"}.

    tokens: the gen_length completion ids; transfers: positions committed per step (one entry per
    step, i.e. per forward or CFG pair); positions: the committed completion offsets per step,
    ascending; min_margin: the smallest of
      (a) the top1 - top2 logit gap at every committed position (the argmax decision),
      (b) low_confidence: conf(last selected) - conf(first unselected) at each step where both exist,
      (c) threshold: |conf - threshold| of every masked block position but the most confident one,
          and conf(first) - conf(second) when the first is below the threshold (the forced pick).
    """
    if temperature != 0:
        raise ValueError("the reference decodes greedily only (temperature 0)")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
    if confidence not in CONFIDENCES:
        raise ValueError(f"unknown confidence {confidence!r}; expected one of {CONFIDENCES}")
    if decoder == "threshold" and threshold is None:
        raise ValueError("the threshold decoder needs a threshold")
    num_blocks, steps_per_block = check_lengths(gen_length, block_length, steps, decoder)
    mask = cfg.mask_token_id
    if any(t == mask or not 0 <= t < cfg.embedding_size for t in prompt):
        raise ValueError("prompt ids must be in [0, embedding_size) and not the mask token")
    P = len(prompt)
    if P + gen_length > cfg.max_sequence_length:
        raise ValueError("prompt + gen_length exceeds max_sequence_length")

    x = torch.full((P + gen_length,), mask, dtype=torch.long)
    x[:P] = torch.tensor(prompt, dtype=torch.long)
    nfe, transfers, positions = 0, [], []
    min_margin = math.inf

    def masked_in_block(lo: int, hi: int) -> list[int]:
        return [j for j in range(lo, hi) if int(x[j]) == mask]

    def run_step(lo: int, hi: int):
        nonlocal nfe
        logits, n = step_logits(params, cfg, x, P, cfg_scale)
        nfe += n
        x0, conf, gap = confidence_of(logits, confidence)
        cand = masked_in_block(lo, hi)
        # confidence descending, ties to the lower position
        order = sorted(cand, key=lambda j: (-float(conf[j]), j))
        return x0, conf, gap, order

    def commit(chosen: list[int], x0, gap) -> None:
        nonlocal min_margin
        for j in chosen:
            x[j] = x0[j]
            min_margin = min(min_margin, float(gap[j]))
        transfers.append(len(chosen))
        positions.append(sorted(j - P for j in chosen))

    for b in range(num_blocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        if decoder == "low_confidence":
            counts = schedule(len(masked_in_block(lo, hi)), steps_per_block)
            for k in counts:
                x0, conf, gap, order = run_step(lo, hi)
                chosen = order[:k]
                if 0 < k < len(order):
                    min_margin = min(min_margin, float(conf[order[k - 1]] - conf[order[k]]))
                commit(chosen, x0, gap)
        else:
            while masked_in_block(lo, hi):
                x0, conf, gap, order = run_step(lo, hi)
                first = order[0]
                chosen = [first] + [j for j in order[1:] if float(conf[j]) >= threshold]
                for j in order[1:]:
                    min_margin = min(min_margin, abs(float(conf[j]) - threshold))
                if len(order) > 1 and float(conf[first]) < threshold:
                    min_margin = min(min_margin, float(conf[first] - conf[order[1]]))
                commit(chosen, x0, gap)
        assert not masked_in_block(lo, hi), "block left with masks"

    return {"tokens": [int(t) for t in x[P:]], "nfe": nfe, "transfers": transfers,
            "positions": positions, "min_margin": min_margin}
