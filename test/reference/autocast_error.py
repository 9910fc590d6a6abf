"""PyTorch's bf16 autocast on the fixture models, for the bf16 engine's tolerances
(test/native/bf16.test.ts): the same error measure (max |x - ref| / max |ref| per tensor) against the
float64 fixtures, for the logits and the masked-SFT gradients. Autocast runs every matmul in bf16
(the attention's two as well, which the engine keeps in fp32) with fp32 weights and sums.
Not a test (tests read fixtures, never PyTorch): prints one line per model.
usage: python3 test/reference/autocast_error.py
"""
import json
import os

import numpy as np
import torch

import llada_ref as ref

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max())


for name in ["mha_f32", "gqa_f32", "gqa_bf16", "mha_f16"]:
    d = os.path.join(FIX, name)
    cfg_dict, stored = ref.load_hf_dir(d)
    cfg = ref.Config.from_dict(cfg_dict)
    params = {k: v.float() for k, v in stored.items()}
    spec = json.load(open(os.path.join(d, "expected.json")))
    worst = 0.0
    for c in spec["cases"]:
        want = torch.from_numpy(np.fromfile(os.path.join(d, c["logits"]), dtype=np.float32)).view(*c["shape"])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            got = ref.forward(params, cfg, torch.tensor(c["ids"], dtype=torch.long)).float()
        worst = max(worst, rel(got, want))
    line = f"{name}: autocast logits {worst:.2e}"
    train = os.path.join(d, "train.json")
    if os.path.exists(train):
        t = json.load(open(train))
        b = t["batch"]
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = ref.selected_loss(leaves, cfg, b["seqs"], b["rows"], b["targets"], torch.tensor(b["weights"]))
        loss.float().backward()
        grads = ref.read_safetensors(os.path.join(d, t["grads"]))
        errs = [rel(leaves[k].grad, grads[k]) for k in grads]
        line += f", SFT gradients {min(errs):.2e}..{max(errs):.2e}"
    print(line)
