"""Self-checks for llada_ref.py: an independent naive forward, and safetensors round trips.

The naive forward uses numpy and explicit loops over batch, position, head and RoPE pair, written
from DESIGN.md rather than from llada_ref.forward, so a layout bug (interleaved RoPE, wrong GQA
head mapping, transposed weight) shows up as a mismatch. Run: /usr/bin/python3 test/reference/check_ref.py
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llada_ref as ref  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def naive_forward(params: dict[str, np.ndarray], cfg: ref.Config, ids: list[list[int]]) -> np.ndarray:
    P = ref.PREFIX
    d, H, KV, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    group = H // KV

    def linear(w, x):  # w [out, in], x [in]
        out = np.zeros(w.shape[0])
        for o in range(w.shape[0]):
            out[o] = sum(w[o, i] * x[i] for i in range(w.shape[1]))
        return out

    def norm(w, x):
        ms = sum(v * v for v in x) / len(x)
        return np.array([w[i] * x[i] / math.sqrt(ms + cfg.rms_norm_eps) for i in range(len(x))])

    def rope(vec, pos):  # one head's vector [hd]; dim i pairs with i + hd/2
        out = vec.copy()
        half = hd // 2
        for i in range(half):
            angle = pos * cfg.rope_theta ** (-2.0 * i / hd)
            c, s = math.cos(angle), math.sin(angle)
            out[i] = vec[i] * c - vec[i + half] * s
            out[i + half] = vec[i + half] * c + vec[i] * s
        return out

    B, T = len(ids), len(ids[0])
    result = np.zeros((B, T, cfg.embedding_size))
    for b in range(B):
        xs = [params[P + "wte.weight"][tok].copy() for tok in ids[b]]
        for layer in range(cfg.n_layers):
            pre = f"{P}blocks.{layer}."
            hs = [norm(params[pre + "attn_norm.weight"], x) for x in xs]
            q = [linear(params[pre + "q_proj.weight"], h) for h in hs]
            k = [linear(params[pre + "k_proj.weight"], h) for h in hs]
            v = [linear(params[pre + "v_proj.weight"], h) for h in hs]
            attn = [np.zeros(d) for _ in range(T)]
            for head in range(H):
                kvh = head // group
                qs = [rope(q[t][head * hd:(head + 1) * hd], t) for t in range(T)]
                ks = [rope(k[t][kvh * hd:(kvh + 1) * hd], t) for t in range(T)]
                vs = [v[t][kvh * hd:(kvh + 1) * hd] for t in range(T)]
                for t in range(T):
                    scores = [sum(qs[t][i] * ks[u][i] for i in range(hd)) / math.sqrt(hd) for u in range(T)]
                    m = max(scores)
                    e = [math.exp(s - m) for s in scores]
                    z = sum(e)
                    for u in range(T):
                        attn[t][head * hd:(head + 1) * hd] += (e[u] / z) * vs[u]
            xs = [xs[t] + linear(params[pre + "attn_out.weight"], attn[t]) for t in range(T)]
            new = []
            for x in xs:
                h = norm(params[pre + "ff_norm.weight"], x)
                g = linear(params[pre + "ff_proj.weight"], h)
                u = linear(params[pre + "up_proj.weight"], h)
                act = np.array([g[i] / (1.0 + math.exp(-g[i])) * u[i] for i in range(len(g))])
                new.append(x + linear(params[pre + "ff_out.weight"], act))
            xs = new
        for t in range(T):
            result[b, t] = linear(params[P + "ff_out.weight"], norm(params[P + "ln_f.weight"], xs[t]))
    return result


def check_naive(case: str) -> None:
    """llada_ref.forward equals the naive loops on the stored weights of `case`."""
    cfg_dict, stored = ref.load_hf_dir(os.path.join(FIXTURES, case))
    cfg = ref.Config.from_dict(cfg_dict)
    params64 = {k: v.double() for k, v in stored.items()}
    np_params = {k: v.numpy() for k, v in params64.items()}
    ids = [[3, cfg.mask_token_id, 0, cfg.vocab_size - 1, 17], [cfg.mask_token_id] * 4 + [9]]
    fast = ref.forward(params64, cfg, torch.tensor(ids)).numpy()
    slow = naive_forward(np_params, cfg, ids)
    err = np.abs(fast - slow).max() / np.abs(slow).max()
    assert err < 1e-12, f"{case}: forward differs from the naive loops (max rel {err:.3e})"
    # a row's logits do not depend on the other rows of the batch
    alone = ref.forward(params64, cfg, torch.tensor(ids[1:])).numpy()
    assert np.abs(alone - fast[1:]).max() < 1e-12, f"{case}: rows interact"
    print(f"ok  naive forward matches ({case}, max rel err {err:.1e})")


def check_fixture(case: str) -> None:
    """The stored weights read back exactly, and the stored logits are the forward of them."""
    path = os.path.join(FIXTURES, case)
    cfg_dict, stored = ref.load_hf_dir(path)
    cfg = ref.Config.from_dict(cfg_dict)
    shapes = ref.param_shapes(cfg)
    assert set(stored) == set(shapes), f"{case}: tensor names differ"
    for name, shape in shapes.items():
        assert tuple(stored[name].shape) == shape, f"{case}: {name} has shape {tuple(stored[name].shape)}"
    # writing the read-back tensors again reproduces the files byte for byte
    roundtrip = os.path.join(path, ".roundtrip")
    dtype = ref._ST_DTYPES[next(iter(stored.values())).dtype]
    index = os.path.join(path, "model.safetensors.index.json")
    shards = len(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else 1
    ordered = {k: stored[k] for k in shapes}
    ref.save_hf_dir(roundtrip, cfg_dict, ordered, dtype, shards)
    try:
        for fname in sorted(os.listdir(roundtrip)):
            with open(os.path.join(roundtrip, fname), "rb") as a, open(os.path.join(path, fname), "rb") as b:
                assert a.read() == b.read(), f"{case}: {fname} does not round-trip"
    finally:
        for fname in os.listdir(roundtrip):
            os.remove(os.path.join(roundtrip, fname))
        os.rmdir(roundtrip)
    params64 = {k: v.double() for k, v in stored.items()}
    with open(os.path.join(path, "expected.json")) as f:
        expected = json.load(f)
    for c in expected["cases"]:
        ids = torch.tensor(c["ids"])
        assert int(ids.max()) < cfg.vocab_size and int(ids.min()) >= 0
        want = np.fromfile(os.path.join(path, c["logits"]), dtype="<f4").reshape(c["shape"])
        got = ref.forward(params64, cfg, ids).numpy()
        err = np.abs(got - want).max() / np.abs(got).max()
        assert err < 1e-6, f"{case}/{c['name']}: logits differ ({err:.3e})"
    print(f"ok  {case}: weights round-trip, {len(expected['cases'])} logits cases reproduce")


def check_train(case: str) -> None:
    """The stored loss, log-probs and gradients reproduce, and the gradients agree with central
    differences of the loss in float64 (an autograd-free check) at each tensor's largest entry."""
    path = os.path.join(FIXTURES, case)
    cfg_dict, stored = ref.load_hf_dir(path)
    cfg = ref.Config.from_dict(cfg_dict)
    params64 = {k: v.double() for k, v in stored.items()}
    with open(os.path.join(path, "train.json")) as f:
        train = json.load(f)
    b = train["batch"]
    weights = torch.tensor(b["weights"], dtype=torch.float64)
    grads = ref.read_safetensors(os.path.join(path, train["grads"]))
    assert set(grads) == set(params64), f"{case}: grads name other tensors than the model"

    def loss_of(params):
        return float(ref.selected_loss(params, cfg, b["seqs"], b["rows"], b["targets"], weights)[0])

    assert abs(loss_of(params64) - train["loss"]) < 1e-12 * abs(train["loss"]), f"{case}: loss does not reproduce"
    h, worst = 1e-6, 0.0
    for name, g in grads.items():
        idx = int(g.abs().argmax())
        p = params64[name].clone()
        flat = p.view(-1)
        orig = float(flat[idx])
        flat[idx] = orig + h
        up = loss_of(dict(params64, **{name: p}))
        flat[idx] = orig - h
        down = loss_of(dict(params64, **{name: p}))
        fd = (up - down) / (2 * h)
        err = abs(fd - float(g.view(-1)[idx])) / float(g.abs().max())
        worst = max(worst, err)
        assert err < 1e-5, f"{case}: {name}[{idx}] gradient {float(g.view(-1)[idx])} but central difference {fd}"
    print(f"ok  {case}: training loss reproduces; gradients match central differences (max rel {worst:.1e})")


def main() -> None:
    # model fixtures are the directories with a config.json
    cases = sorted(d for d in os.listdir(FIXTURES) if os.path.isfile(os.path.join(FIXTURES, d, "config.json")))
    assert cases, "no fixtures; run make_fixtures.py"
    for case in cases:
        check_fixture(case)
    for case in cases:
        if os.path.exists(os.path.join(FIXTURES, case, "train.json")):
            check_train(case)
    check_naive("mha_f32")
    check_naive("gqa_f32")


if __name__ == "__main__":
    main()
