"""Write test/reference/fixtures/grpo/: JustGRPO steps on fixed rollouts of the tiny F32 models.

For mha_f32 and gqa_f32 (written by make_fixtures.py; read, not changed): two prompts of different
lengths, G = 4 completions each of gen_length 6 (fixed ids < 61, never the mask token 60), rewards
that give the first group zero variance (A = 0, not counted) and the second not. Old log-probs are
the starting model's log-probs plus fixed offsets: +-0.1 against the sign of A on most tokens (so
ratios differ from 1 and the loss is not a near-cancelling sum), +-0.3 on a few tokens so that some
are clipped low (A < 0, ratio 0.74) and some high (A > 0, ratio 1.35), and two +-0.3 tokens on the
unclipped side. Old log-probs are rounded to float32 (what the engine receives) before use.

Cases (all lr 1e-3, betas 0.9/0.999, eps 1e-8, clip-norm 1.0, which every first step exceeds):
- `base`: one step, beta 0, weight decay 0 (JustGRPO's settings);
- `iters2_wd`: numIterations 2 (two AdamW steps on the same rollouts, old log-probs fixed), weight
  decay 0.1 on the 2-D matrices;
- `kl_iters2`: beta 0.04 (k3 KL against the starting model, weight 1 / gen_length / valid on every
  completion, zero-variance ones included), epsilonHigh 0.28, numIterations 2 (the first step's KL
  and its gradient are exactly 0 since the policy is the reference; the second's are not).

Stored in float64 -> float32 where binary: `grads_<model>.safetensors` (every parameter's unclipped
gradient of the first step; the same for all three cases, which the script checks, up to the KL's
zero gradient), `delta_<model>_<case>.safetensors` (final weights minus starting weights), and
grpo.json (inputs, advantages, per iteration: loss, log-probs, clip counts, KL, grad norm).
Before writing, the first step's gradients are checked against float64 central differences of the
loss, every token's log ratio is checked to be >= MIN_MARGIN from a clip boundary in
every iteration, and a float32 PyTorch run of each case is compared with the float64 one (the
conditioning the engine's tolerances rely on; figures in grpo.json). Deterministic.

    /usr/bin/python3 test/reference/make_grpo_fixtures.py
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import grpo_ref as g  # noqa: E402
import llada_ref as ref  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")
OUT_DIR = os.path.join(FIXTURES, "grpo")
MODELS = ("mha_f32", "gqa_f32")
MIN_MARGIN = 1e-3

G, L = 4, 6
PROMPTS = [[57, 12, 3, 40, 7], [57, 25, 9, 31, 2, 44, 18, 5, 50]]
COMPLETIONS = [
    [4, 17, 33, 8, 21, 58], [11, 4, 29, 50, 0, 13], [36, 2, 19, 44, 7, 30], [23, 49, 6, 15, 52, 9],
    [14, 3, 27, 56, 38, 1], [45, 20, 10, 31, 5, 58], [8, 39, 53, 16, 26, 42], [30, 12, 47, 2, 35, 59],
]
REWARDS = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.0]
SMALL = [0.1, 0.05, 0.08, 0.1, 0.03, 0.06]
# (completion, position, offset): old = logp + offset, ratio = exp(-offset).
BIG = [(4, 1, -0.3), (4, 3, 0.3), (5, 0, 0.3), (5, 4, -0.3), (6, 2, -0.3), (7, 5, 0.3)]

OPT = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, max_grad_norm=1.0)
CASES = {
    "base": dict(num_iterations=1, weight_decay=0.0, beta=0.0, eps_low=0.2, eps_high=0.2),
    "iters2_wd": dict(num_iterations=2, weight_decay=0.1, beta=0.0, eps_low=0.2, eps_high=0.2),
    "kl_iters2": dict(num_iterations=2, weight_decay=0.0, beta=0.04, eps_low=0.2, eps_high=0.28),
}


def old_logprobs(logp: torch.Tensor, advantages: list[float]) -> torch.Tensor:
    off = torch.zeros(len(COMPLETIONS), L, dtype=torch.float64)
    for i in range(len(COMPLETIONS)):
        # against A's sign: A > 0 gets ratio < 1 and A < 0 ratio > 1, so the objective's terms add up
        sign = 1.0 if advantages[i] > 0 else -1.0 if advantages[i] < 0 else (1.0 if i % 2 else -1.0)
        for t in range(L):
            off[i, t] = sign * SMALL[(i + t) % len(SMALL)]
    for i, t, o in BIG:
        off[i, t] = o
    # float32, as the engine receives them; the reference uses the same rounded values
    return (logp + off).float().double()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def fp32_conditioning(params64: dict, cfg: ref.Config, old: torch.Tensor, case: dict, run64: dict) -> dict:
    """The same case in float32 PyTorch, against float64: how well-conditioned the numbers are."""
    p32 = {k: v.float() for k, v in params64.items()}
    r32 = g.grpo_run(p32, cfg, PROMPTS, COMPLETIONS, G, REWARDS, old.float(), **OPT, **case)
    grads = max(rel(r32["first_grads"][k], run64["first_grads"][k]) for k in params64)
    deltas = max(rel(r32["final"][k].double() - params64[k], run64["final"][k] - params64[k]) for k in params64)
    weights = max(rel(r32["final"][k], run64["final"][k]) for k in params64)
    losses = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(r32["iterations"], run64["iterations"]))
    same_regions = all(bool((a["region"] == b["region"]).all()) for a, b in zip(r32["iterations"], run64["iterations"]))
    assert same_regions, "float32 and float64 clip regions differ"
    return {"loss": losses, "first_grads": grads, "weights": weights, "deltas": deltas}


def check_central_differences(params64: dict, cfg: ref.Config, old: torch.Tensor, grads: dict, case: dict) -> float:
    """The first step's autograd gradients against central differences of the loss (float64, no
    autograd) at each tensor's largest entry; returns the worst error relative to the tensor's
    largest gradient."""
    advantages, valid = g.group_advantages(REWARDS, G)
    weight = 1.0 / L / sum(valid)

    def loss_of(p: dict) -> float:
        return g.grpo_loss_backward(p, cfg, PROMPTS, COMPLETIONS, G, advantages, old, None, case["eps_low"],
                                    case["eps_high"], 0.0, weight, backward=False)["loss"]

    h, worst = 1e-6, 0.0
    for name, grad in grads.items():
        idx = int(grad.abs().argmax())
        p = params64[name].clone()
        flat = p.view(-1)
        orig = float(flat[idx])
        flat[idx] = orig + h
        up = loss_of(dict(params64, **{name: p}))
        flat[idx] = orig - h
        down = loss_of(dict(params64, **{name: p}))
        err = abs((up - down) / (2 * h) - float(grad.view(-1)[idx])) / float(grad.abs().max())
        assert err < 1e-5, f"{name}[{idx}]: gradient {float(grad.view(-1)[idx])} but central difference {(up - down) / (2 * h)}"
        worst = max(worst, err)
    return worst


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float64).float())


def make_model(name: str) -> dict:
    path = os.path.join(FIXTURES, name)
    cfg_dict, stored = ref.load_hf_dir(path)
    cfg = ref.Config.from_dict(cfg_dict)
    params64 = {k: v.double() for k, v in stored.items()}
    names = list(ref.param_shapes(cfg))
    advantages, valid = g.group_advantages(REWARDS, G)
    assert valid == [False] * G + [True] * G, "group 0 must have zero variance, group 1 not"
    logp = g.token_logprobs(params64, cfg, PROMPTS, COMPLETIONS, G)
    old = old_logprobs(logp, advantages)
    out = {"model": name, "model_sha256": sha256(os.path.join(path, "model.safetensors")),
           "logprobs": logp.tolist(), "old_logprobs": [[f32(x) for x in row] for row in old.tolist()],
           "grads": f"grads_{name}.safetensors", "cases": {}}
    base_grads = None
    for case_name, case in CASES.items():
        run = g.grpo_run(params64, cfg, PROMPTS, COMPLETIONS, G, REWARDS, old, **OPT, **case)
        assert run["advantages"] == advantages
        for k, it in enumerate(run["iterations"]):
            m = g.ratio_margin(it["logprobs"], old, case["eps_low"], case["eps_high"])
            assert m >= MIN_MARGIN, f"{name}/{case_name}: iteration {k} has a log ratio {m:.2e} from a clip boundary"
            assert it["grad_norm"] > OPT["max_grad_norm"] or k > 0, f"{name}/{case_name}: the first step does not clip"
        first = run["iterations"][0]
        assert int((first["region"] == 1).sum()) >= 2 and int((first["region"] == 2).sum()) >= 2
        if base_grads is None:
            base_grads = run["first_grads"]
            fd = check_central_differences(params64, cfg, old, base_grads, case)
            print(f"  {name}: first-step gradients match central differences of the loss (max rel {fd:.1e})")
            ref.write_safetensors(os.path.join(OUT_DIR, out["grads"]),
                                  {k: base_grads[k].float() for k in names},
                                  {"format": "pt", "note": "unclipped gradient of the first step, float64 -> float32"})
        else:
            # the KL's gradient is exactly 0 at the reference; nothing else differs in the first step
            worst = max(rel(run["first_grads"][k], base_grads[k]) for k in names)
            assert worst < 1e-12, f"{name}/{case_name}: first-step gradient differs from base ({worst:.1e})"
        delta_file = f"delta_{name}_{case_name}.safetensors"
        ref.write_safetensors(os.path.join(OUT_DIR, delta_file),
                              {k: (run["final"][k] - params64[k]).float() for k in names},
                              {"format": "pt", "note": "final weights minus starting weights, float64 -> float32"})
        cond = fp32_conditioning(params64, cfg, old, case, run)
        n_included = len(COMPLETIONS) if case["beta"] > 0 else sum(valid)
        out["cases"][case_name] = {
            "num_iterations": case["num_iterations"], "beta": case["beta"], "epsilon": case["eps_low"],
            "epsilon_high": case["eps_high"], "weight_decay": case["weight_decay"],
            "advantages": advantages, "valid": valid, "token_weight": run["weight"],
            "included_completions": n_included,
            "iterations": [{
                "loss": it["loss"], "grad_norm": it["grad_norm"],
                "clip_coef": g.clip_coef(it["grad_norm"], OPT["max_grad_norm"]),
                "clipped_low": int((it["region"] == 1).sum()), "clipped_high": int((it["region"] == 2).sum()),
                "kl_sum": it["kl_sum"], "logprobs": it["logprobs"].tolist(), "region": it["region"].tolist(),
            } for it in run["iterations"]],
            "delta": delta_file,
            "fp32_pytorch_vs_fp64": cond,
        }
        print(f"  {name}/{case_name}: loss {[round(it['loss'], 6) for it in run['iterations']]}, grad norm "
              f"{[round(it['grad_norm'], 4) for it in run['iterations']]}, fp32 torch vs fp64: "
              + ", ".join(f"{k} {v:.1e}" for k, v in cond.items()))
    return out


def main() -> None:
    torch.set_num_threads(1)  # deterministic reductions
    os.makedirs(OUT_DIR, exist_ok=True)
    for f in os.listdir(OUT_DIR):
        if f.endswith(".safetensors") or f == "grpo.json":
            os.remove(os.path.join(OUT_DIR, f))
    spec = {
        "note": "JustGRPO steps on fixed rollouts (grpo_ref.py, float64); see README.md",
        "prompts": PROMPTS, "completions": COMPLETIONS, "rewards": REWARDS, "num_generations": G,
        "gen_length": L, "optimizer": dict(OPT, betas=list(OPT["betas"])),
        "models": {name: make_model(name) for name in MODELS},
    }
    with open(os.path.join(OUT_DIR, "grpo.json"), "w") as f:
        json.dump(spec, f, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR))
    print(f"wrote {OUT_DIR} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
