"""PyTorch reference for one JustGRPO step (JustGRPO's grpo.py / train.py, re-implemented).

The step as the reference loops it: group advantages A = (r - mean) / (std_unbiased + 1e-4) over the
G completions of each prompt (a zero-variance group gives A = 0 and its completions do not count);
then for every position t one forward and one backward of the whole group, input
[prompt, x_<t, MASK x (L - t)], the log-softmax of row P + t; per token
-min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A) (+ beta k3(ref, logp) when beta > 0) with
ratio = exp(logp - old_logp), weighted 1 / gen_length / valid_samples; gradients accumulate over t;
then torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW. numIterations > 1 repeats loss, clip and
AdamW on the same rollouts with the old log-probs fixed.

Deliberate differences from JustGRPO's code, all the engine's conventions (DESIGN.md):
- the policy's distribution excludes the mask token and the embedding padding (ids >= vocab_size):
  their logits are -inf before the log-softmax, as the sampler never draws them;
- completions are prompt-major (prompt p's completion g at p * G + g; JustGRPO repeats the prompt
  batch, so its groups are strided) and prompts need not share a length (each group runs alone);
- the normaliser is the exact count of completions with A != 0 (JustGRPO adds 1e-5 and averages the
  count over ranks);
- old log-probs are given (JustGRPO's on-policy loss detaches the current ones, ratio = 1), so the
  clipping is exercised; JustGRPO's temperature is 1 in training, so logits are not divided.

Works in float64. Run with `/usr/bin/python3` (Debian's torch).
"""

from __future__ import annotations

import math

import torch

import llada_ref as ref


def group_advantages(rewards: list[float], G: int) -> tuple[list[float], list[bool]]:
    """JustGRPO's compute_group_advantages for prompt-major groups; (advantages, valid)."""
    r = torch.tensor(rewards, dtype=torch.float64).view(-1, G)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True)  # unbiased, as torch.std defaults
    adv = (r - mean) / (std + 1e-4)
    # A zero-variance group: r - mean is exactly 0 for the rewards used here, so JustGRPO's formula
    # already gives 0; make it explicit so a rounding residue never counts as a valid sample.
    adv = torch.where(std == 0, torch.zeros_like(adv), adv).view(-1)
    advantages = [float(a) for a in adv]
    return advantages, [a != 0 for a in advantages]


def ar_input(prompt: list[int], completion: list[int], t: int, mask: int) -> list[int]:
    """[prompt, x_<t, MASK x (L - t)]: the sampler's input when it drew x_t."""
    L = len(completion)
    return list(prompt) + list(completion[:t]) + [mask] * (L - t)


def policy_logprobs(logits: torch.Tensor, cfg: ref.Config, targets: torch.Tensor) -> torch.Tensor:
    """log p(target | row) over the policy's ids: the mask token's and every padded column's logit
    set to -inf before the log-softmax. logits [n, embedding_size] -> [n]."""
    excluded = torch.zeros(logits.shape[-1], dtype=torch.bool)
    excluded[cfg.mask_token_id] = True
    excluded[cfg.vocab_size:] = True
    lp = torch.log_softmax(logits.masked_fill(excluded, float("-inf")), dim=-1)
    return lp.gather(-1, targets[:, None]).squeeze(-1)


def token_logprobs(params: dict[str, torch.Tensor], cfg: ref.Config, prompts: list[list[int]],
                   completions: list[list[int]], G: int) -> torch.Tensor:
    """The exact AR-order log-likelihood [N, L], one forward per (group, t), without gradients."""
    L = len(completions[0])
    out = torch.zeros(len(completions), L, dtype=torch.float64)
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            group = completions[p * G:(p + 1) * G]
            for t in range(L):
                x = torch.tensor([ar_input(prompt, c, t, cfg.mask_token_id) for c in group], dtype=torch.long)
                logits = ref.forward(params, cfg, x)[:, len(prompt) + t]
                targets = torch.tensor([c[t] for c in group], dtype=torch.long)
                out[p * G:(p + 1) * G, t] = policy_logprobs(logits, cfg, targets).to(torch.float64)
    return out


def grpo_loss_backward(leaves: dict[str, torch.Tensor], cfg: ref.Config, prompts: list[list[int]],
                       completions: list[list[int]], G: int, advantages: list[float],
                       old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None, eps_low: float,
                       eps_high: float, beta: float, weight: float, backward: bool = True) -> dict:
    """JustGRPO's logprob_loss: for each group and each t, one forward and backward; gradients
    accumulate into leaves[*].grad. Returns the summed loss, log-probs [N, L], the clip regions
    [N, L] (0 none, 1 low: ratio < 1 - eps_low and A < 0, 2 high: ratio > 1 + eps_high and A > 0,
    TRL's definitions) and the summed k3 KL (unweighted)."""
    L = len(completions[0])
    N = len(completions)
    logp_all = torch.zeros(N, L, dtype=torch.float64)
    region = torch.zeros(N, L, dtype=torch.int64)
    total, kl_sum = 0.0, 0.0
    for p, prompt in enumerate(prompts):
        rows = slice(p * G, (p + 1) * G)
        group = completions[rows]
        A = torch.tensor(advantages[rows], dtype=torch.float64)
        for t in range(L):
            x = torch.tensor([ar_input(prompt, c, t, cfg.mask_token_id) for c in group], dtype=torch.long)
            logits = ref.forward(leaves, cfg, x)[:, len(prompt) + t]
            targets = torch.tensor([c[t] for c in group], dtype=torch.long)
            logp = policy_logprobs(logits, cfg, targets)
            ratio = (logp - old_logprobs[rows, t]).exp()
            clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
            per_token = -torch.min(ratio * A, clipped * A)
            if beta > 0:
                diff = ref_logprobs[rows, t] - logp
                k3 = diff.exp() - diff - 1
                per_token = per_token + beta * k3
                kl_sum += float(k3.sum())
            loss = (per_token * weight).sum()
            if backward:
                loss.backward()
            total += float(loss)
            logp_all[rows, t] = logp.detach()
            r = ratio.detach()
            region[rows, t] = torch.where((r < 1 - eps_low) & (A < 0), 1, torch.where((r > 1 + eps_high) & (A > 0), 2, 0))
    return {"loss": total, "logprobs": logp_all, "region": region, "kl_sum": kl_sum}


def grpo_run(params: dict[str, torch.Tensor], cfg: ref.Config, prompts: list[list[int]],
             completions: list[list[int]], G: int, rewards: list[float], old_logprobs: torch.Tensor,
             *, num_iterations: int, lr: float, betas: tuple[float, float], eps: float,
             weight_decay: float, max_grad_norm: float, eps_low: float, eps_high: float,
             beta: float) -> dict:
    """num_iterations JustGRPO optimizer steps on fixed rollouts: zero_grad, the per-t loss loop,
    clip_grad_norm_, AdamW (weight decay on the 2-D matrices only). The reference model for beta > 0
    is the starting model. Returns per-iteration records (loss, log-probs, regions, kl, grad norm),
    the first iteration's unclipped gradients and the final parameters."""
    L = len(completions[0])
    advantages, valid = group_advantages(rewards, G)
    n_valid = sum(valid)
    weight = 1.0 / L / n_valid
    ref_lp = token_logprobs(params, cfg, prompts, completions, G) if beta > 0 else None
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    decay = [t for t in leaves.values() if t.dim() == 2]
    no_decay = [t for t in leaves.values() if t.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)
    iterations, first_grads = [], None
    for it in range(num_iterations):
        opt.zero_grad(set_to_none=False)
        for v in leaves.values():
            if v.grad is None:
                v.grad = torch.zeros_like(v)
        rec = grpo_loss_backward(leaves, cfg, prompts, completions, G, advantages, old_logprobs, ref_lp,
                                 eps_low, eps_high, beta, weight)
        if it == 0:
            first_grads = {k: v.grad.detach().clone() for k, v in leaves.items()}
        norm = float(torch.nn.utils.clip_grad_norm_(list(leaves.values()), max_grad_norm))
        opt.step()
        rec["grad_norm"] = norm
        iterations.append(rec)
    return {"advantages": advantages, "valid": valid, "weight": weight, "ref_logprobs": ref_lp,
            "iterations": iterations, "first_grads": first_grads,
            "final": {k: v.detach().clone() for k, v in leaves.items()}}


def clip_coef(norm: float, max_norm: float) -> float:
    """The factor clip_grad_norm_ scales gradients by."""
    return min(1.0, max_norm / (norm + 1e-6))


def ratio_margin(logprobs: torch.Tensor, old_logprobs: torch.Tensor, eps_low: float, eps_high: float) -> float:
    """The smallest |log ratio - log boundary| over all tokens: how far every token is from switching
    clip region (fp32 rounding must not decide a region)."""
    lr = logprobs - old_logprobs
    return float(torch.min((lr - math.log(1 - eps_low)).abs().min(), (lr - math.log(1 + eps_high)).abs().min()))
