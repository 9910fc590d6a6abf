"""Write the fixtures under test/reference/fixtures/ (committed; tests never run PyTorch).

Each case directory is a tiny random LLaDA checkpoint (config.json + safetensors) and expected.json
with float32 logits computed in float64 from the weights exactly as stored (BF16/F16 weights are
rounded first, then upcast). The F32 models also get training fixtures: train.json (a masked SFT
batch, its loss and log-probs, and the losses of 10 AdamW steps) and grads.safetensors (the loss's
gradient for every parameter). Output is deterministic. Afterwards the self-checks in check_ref.py run.

    /usr/bin/python3 test/reference/make_fixtures.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_ref  # noqa: E402
import llada_ref as ref  # noqa: E402

FIXTURES = os.path.join(HERE, "fixtures")

# Token ids of the tiny vocabulary (61 ids, embedding rows padded to 64 like LLaDA's 126464).
VOCAB, EMBED = 61, 64
MASK, BOS, EOS = 60, 57, 58

BASE = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=48, vocab_size=VOCAB,
            embedding_size=EMBED, mask_token_id=MASK, bos_token_id=BOS, eos_token_id=EOS,
            pad_token_id=EOS, rope_theta=10000.0, rms_norm_eps=1e-5, max_sequence_length=64)
GQA = dict(BASE, n_heads=8, n_kv_heads=2, rope_theta=500000.0)

# name: (config, seed, stored dtype, shards)
MODELS = {
    "mha_f32": (BASE, 1, "F32", 1),
    "gqa_f32": (GQA, 2, "F32", 1),
    "gqa_bf16": (GQA, 3, "BF16", 2),
    "mha_f16": (BASE, 4, "F16", 1),
}


def id_cases() -> list[tuple[str, list[list[int]]]]:
    """The same inputs for every model (ids < vocab_size, MASK = 60 where noted)."""
    rng = np.random.RandomState(1234)
    a = rng.randint(0, VOCAB - 1, size=(2, 7))
    a[0, [2, 5]] = MASK
    a[1, [0, 3, 4, 6]] = MASK
    c = np.zeros((3, 12), dtype=np.int64)
    c[0] = [0, 60, 1, 59, 30, 2, 45, 15, 58, 57, 31, 7]
    c[1] = [BOS] + [MASK] * 11  # a prompt of one token, then a fully masked completion
    c[2] = rng.permutation(VOCAB)[:12]
    d = rng.permutation(np.concatenate([np.arange(VOCAB), rng.randint(0, VOCAB, size=64 - VOCAB)]))
    return [
        ("B2_T7_masked", a.tolist()),
        ("B1_T1", [[7]]),
        ("B3_T12_full_vocab", c.tolist()),
        ("B1_T64_max_length", [d.tolist()]),
    ]


# Models that also get training fixtures, and the AdamW run on them. At lr 1e-2 this run is
# ill-conditioned: PyTorch's own fp32 and fp64 losses part by 4e-6 relative at step 10 (Adam turns
# rounding noise in near-zero gradient elements into full-size updates); at 5e-3 they agree to 3e-7,
# so a 1e-5 test bound measures the engine rather than the conditioning.
TRAIN_MODELS = ("mha_f32", "gqa_f32")
ADAMW = dict(steps=10, lr=5e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.1, max_grad_norm=1.0)


def sft_batch() -> dict:
    """A masked-diffusion SFT batch as LLaDA's guidelines build it: per sequence t ~ U(0, 1),
    p_mask = (1 - 1e-3) t + 1e-3, each response token masked with probability p_mask (at least one),
    prompt tokens never; rows are the masked positions of the packed batch, targets the clean tokens,
    weights 1 / (p_mask * response length * batch size). The last sequence has no prompt (pre-training)."""
    rng = np.random.RandomState(2024)
    specs = [(4, 9), (6, 14), (0, 20)]  # (prompt length, sequence length)
    seqs, rows, targets, weights = [], [], [], []
    start = 0
    for prompt_len, n in specs:
        clean = rng.randint(0, MASK, size=n)  # clean text never holds the mask token
        t = rng.uniform(0, 1)
        p_mask = (1 - 1e-3) * t + 1e-3
        resp = n - prompt_len
        masked = rng.uniform(size=resp) < p_mask
        if not masked.any():
            masked[rng.randint(resp)] = True
        pos = prompt_len + np.nonzero(masked)[0]
        noisy = clean.copy()
        noisy[pos] = MASK
        seqs.append(noisy.tolist())
        rows += (start + pos).tolist()
        targets += clean[pos].tolist()
        # float32, as the engine receives them; the reference uses the same rounded values
        weights += [float(np.float32(1.0 / (p_mask * resp * len(specs))))] * len(pos)
        start += n
    return {"seqs": seqs, "rows": rows, "targets": targets, "weights": weights}


def make_train(path: str, cfg: "ref.Config", params64: dict) -> None:
    batch = sft_batch()
    weights = torch.tensor(batch["weights"], dtype=torch.float64)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params64.items()}
    loss, logprobs = ref.selected_loss(leaves, cfg, batch["seqs"], batch["rows"], batch["targets"], weights)
    loss.backward()
    grads = {k: leaves[k].grad.to(torch.float32) for k in ref.param_shapes(cfg)}
    ref.write_safetensors(os.path.join(path, "grads.safetensors"), grads,
                          {"format": "pt", "note": "d loss / d param, float64 rounded to float32"})
    losses, norms = ref.adamw_run(params64, cfg, batch["seqs"], batch["rows"], batch["targets"], weights,
                                  ADAMW["steps"], ADAMW["lr"], tuple(ADAMW["betas"]), ADAMW["eps"],
                                  ADAMW["weight_decay"], ADAMW["max_grad_norm"])
    assert any(n > ADAMW["max_grad_norm"] for n in norms), "the AdamW run never clips"
    train = {"note": "loss = sum_r weights[r] * -log_softmax(logits[rows[r]])[targets[r]] over embedding_size "
                     "columns, in float64; rows index the packed batch (sequences one after another)",
             "batch": batch, "loss": float(loss), "logprobs": [float(x) for x in logprobs],
             "grads": "grads.safetensors",
             "adamw": dict(ADAMW, decay="2-D weights only", losses=losses, grad_norms=norms)}
    with open(os.path.join(path, "train.json"), "w") as f:
        json.dump(train, f, indent=1)
        f.write("\n")


def dumps_compact(expected: dict) -> str:
    """expected.json with one line per case, so the ids stay readable."""
    head = {k: v for k, v in expected.items() if k != "cases"}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    cases = ",\n  ".join(json.dumps(c) for c in expected["cases"])
    return "{\n" + "\n".join(lines) + "\n \"cases\": [\n  " + cases + "\n ]\n}\n"


def make_model(name: str, cfg_kwargs: dict, seed: int, dtype: str, shards: int) -> None:
    path = os.path.join(FIXTURES, name)
    cfg_dict = ref.llada_config(**cfg_kwargs)
    cfg = ref.Config.from_dict(cfg_dict)
    # round to the stored dtype first: the engine sees the rounded weights
    params = {k: v.to(ref.DTYPES[dtype]) for k, v in ref.random_params(cfg, seed).items()}
    ref.save_hf_dir(path, cfg_dict, params, dtype, shards)
    params64 = {k: v.double() for k, v in params.items()}
    cases = []
    for i, (case_name, ids) in enumerate(id_cases()):
        logits = ref.forward(params64, cfg, torch.tensor(ids, dtype=torch.long))
        fname = f"logits_{i}.bin"
        logits.numpy().astype("<f4").tofile(os.path.join(path, fname))
        cases.append({"name": case_name, "ids": ids, "shape": list(logits.shape), "logits": fname})
        std = float(logits.std())
        assert 0.3 < std < 5.0, f"{name}/{case_name}: logits std {std:.3f} is not O(1)"
    expected = {"model": name, "weights_dtype": dtype, "seed": seed,
                "note": "logits computed in float64 from the stored weights, saved as little-endian float32",
                "cases": cases}
    with open(os.path.join(path, "expected.json"), "w") as f:
        f.write(dumps_compact(expected))
    if name in TRAIN_MODELS:
        make_train(path, cfg, params64)
    print(f"wrote {name}")


def main() -> None:
    torch.set_num_threads(1)  # deterministic reductions
    for name, (cfg_kwargs, seed, dtype, shards) in MODELS.items():
        path = os.path.join(FIXTURES, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        make_model(name, cfg_kwargs, seed, dtype, shards)
    check_ref.main()


if __name__ == "__main__":
    main()
