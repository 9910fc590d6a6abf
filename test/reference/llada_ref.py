"""PyTorch reference for the LLaDA masked diffusion transformer.

This module is the ground truth the engine is tested against (see "The LLaDA block, exactly" in
DESIGN.md). It is written for clarity, not speed, and works in any floating dtype: fixtures are
computed in float64 and stored as float32. It also reads and writes Hugging Face checkpoint
directories (config.json + safetensors, optionally sharded) without the `safetensors` package.

Run with Debian's interpreter, which has torch: `/usr/bin/python3`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

PREFIX = "model.transformer."


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class Config:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden_size: int
    vocab_size: int
    embedding_size: int
    rope_theta: float
    rms_norm_eps: float
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_sequence_length: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @staticmethod
    def from_dict(d: dict) -> "Config":
        n_kv = d.get("n_kv_heads")
        cfg = Config(
            d_model=int(d["d_model"]),
            n_layers=int(d["n_layers"]),
            n_heads=int(d["n_heads"]),
            n_kv_heads=int(n_kv) if n_kv is not None else int(d["n_heads"]),
            mlp_hidden_size=int(d["mlp_hidden_size"]),
            vocab_size=int(d["vocab_size"]),
            embedding_size=int(d.get("embedding_size") or d["vocab_size"]),
            rope_theta=float(d["rope_theta"]),
            rms_norm_eps=float(d["rms_norm_eps"]),
            mask_token_id=int(d["mask_token_id"]),
            eos_token_id=int(d["eos_token_id"]),
            pad_token_id=int(d["pad_token_id"]),
            max_sequence_length=int(d["max_sequence_length"]),
        )
        assert cfg.d_model % cfg.n_heads == 0, "d_model must be divisible by n_heads"
        assert cfg.head_dim % 2 == 0, "RoPE needs an even head dimension"
        assert cfg.n_heads % cfg.n_kv_heads == 0, "n_heads must be divisible by n_kv_heads"
        return cfg


def llada_config(
    *,
    d_model: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None,
    mlp_hidden_size: int,
    vocab_size: int,
    embedding_size: int,
    mask_token_id: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    rope_theta: float = 500000.0,
    rms_norm_eps: float = 1e-5,
    max_sequence_length: int = 4096,
) -> dict:
    """A config.json dict with the fields (and the inert extras) of a released LLaDA checkpoint."""
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "bos_token_id": bos_token_id,
        "d_model": d_model,
        "embedding_dropout": 0.0,
        "embedding_size": embedding_size,
        "eos_token_id": eos_token_id,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": mask_token_id,
        "max_sequence_length": max_sequence_length,
        "mlp_hidden_size": mlp_hidden_size,
        "mlp_ratio": mlp_hidden_size // d_model if mlp_hidden_size % d_model == 0
        else mlp_hidden_size / d_model,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "n_layers": n_layers,
        "pad_token_id": pad_token_id,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": rms_norm_eps,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": rope_theta,
        "scale_logits": False,
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab_size,
        "weight_tying": False,
    }


# ----------------------------------------------------------------------------------------------
# Parameters


def param_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of a LLaDA checkpoint, in the model's order, with its [out, in] shape."""
    d, hd, mlp = cfg.d_model, cfg.head_dim, cfg.mlp_hidden_size
    kv = cfg.n_kv_heads * hd
    shapes: dict[str, tuple[int, ...]] = {PREFIX + "wte.weight": (cfg.embedding_size, d)}
    for i in range(cfg.n_layers):
        b = f"{PREFIX}blocks.{i}."
        shapes[b + "attn_norm.weight"] = (d,)
        shapes[b + "q_proj.weight"] = (d, d)
        shapes[b + "k_proj.weight"] = (kv, d)
        shapes[b + "v_proj.weight"] = (kv, d)
        shapes[b + "attn_out.weight"] = (d, d)
        shapes[b + "ff_norm.weight"] = (d,)
        shapes[b + "ff_proj.weight"] = (mlp, d)
        shapes[b + "up_proj.weight"] = (mlp, d)
        shapes[b + "ff_out.weight"] = (d, mlp)
    shapes[PREFIX + "ln_f.weight"] = (d,)
    shapes[PREFIX + "ff_out.weight"] = (cfg.embedding_size, d)
    return shapes


def random_params(cfg: Config, seed: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Random weights whose logits are O(1) and spread out.

    Embeddings are N(0, 1); every linear layer is N(0, 1/fan_in), so each projection keeps
    activations at unit scale and attention scores q.k/sqrt(hd) have std ~1 (attention is neither
    uniform nor one-hot). Norm weights are 1 + N(0, 0.1^2), so a kernel that drops or misplaces
    them fails.
    """
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)
        elif name.endswith("wte.weight"):
            t = torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            t = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(shape[1])
        params[name] = t.to(dtype)
    return params


# ----------------------------------------------------------------------------------------------
# Forward


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """w * (x * rsqrt(mean(x^2) + eps)); not the (1 + w) form."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps))


def rope_cos_sin(T: int, hd: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [T, hd] for rotate-half RoPE: dimension i and i + hd/2 share frequency i."""
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # [hd/2]
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    angles = torch.cat([freqs, freqs], dim=-1)  # [T, hd]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, H, T, hd]; cos/sin [T, hd]
    return x * cos + rotate_half(x) * sin


def attention(params: dict, cfg: Config, layer: int, h: torch.Tensor) -> torch.Tensor:
    """Bidirectional multi-head attention with GQA; h [B, T, d] -> [B, T, d] (before attn_out)."""
    b = f"{PREFIX}blocks.{layer}."
    B, T, d = h.shape
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    q = (h @ params[b + "q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)  # [B, H, T, hd]
    k = (h @ params[b + "k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)  # [B, KV, T, hd]
    v = (h @ params[b + "v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
    cos, sin = rope_cos_sin(T, hd, cfg.rope_theta, h.dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    # query head j reads kv head j // (H // KV)
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # [B, H, T, T]; no mask
    y = scores.softmax(dim=-1) @ v  # [B, H, T, hd]
    return y.transpose(1, 2).reshape(B, T, d)


def block(params: dict, cfg: Config, layer: int, x: torch.Tensor) -> torch.Tensor:
    b = f"{PREFIX}blocks.{layer}."
    eps = cfg.rms_norm_eps
    x = x + attention(params, cfg, layer, rms_norm(x, params[b + "attn_norm.weight"], eps)) \
        @ params[b + "attn_out.weight"].T
    h = rms_norm(x, params[b + "ff_norm.weight"], eps)
    # ff_proj is the gated (SiLU) branch, up_proj the linear one
    gated = torch.nn.functional.silu(h @ params[b + "ff_proj.weight"].T) * (h @ params[b + "up_proj.weight"].T)
    return x + gated @ params[b + "ff_out.weight"].T


def forward(params: dict[str, torch.Tensor], cfg: Config, ids: torch.Tensor) -> torch.Tensor:
    """ids [B, T] (int64) -> logits [B, T, embedding_size], in the dtype of params."""
    assert ids.dim() == 2, "ids must be [B, T]"
    x = params[PREFIX + "wte.weight"][ids]
    for i in range(cfg.n_layers):
        x = block(params, cfg, i, x)
    x = rms_norm(x, params[PREFIX + "ln_f.weight"], cfg.rms_norm_eps)
    return x @ params[PREFIX + "ff_out.weight"].T


def packed_logits(params: dict[str, torch.Tensor], cfg: Config, seqs: list[list[int]]) -> torch.Tensor:
    """A packed batch as the engine sees it: each sequence runs alone (no padding, no cross-sequence
    attention) and the logits of all sequences are concatenated: [sum of lengths, embedding_size]."""
    return torch.cat([forward(params, cfg, torch.tensor([s], dtype=torch.long))[0] for s in seqs])


def selected_loss(params: dict[str, torch.Tensor], cfg: Config, seqs: list[list[int]], rows: list[int],
                  targets: list[int], weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss over selected rows: sum_r weights[r] * -log softmax(logits[rows[r]])[targets[r]], the
    softmax over all embedding_size columns. Returns (loss, log-probs of the targets)."""
    logits = packed_logits(params, cfg, seqs)[torch.tensor(rows, dtype=torch.long)]
    logprobs = torch.log_softmax(logits, dim=-1)[torch.arange(len(rows)), torch.tensor(targets, dtype=torch.long)]
    return -(weights.to(logprobs.dtype) * logprobs).sum(), logprobs


def adamw_run(params: dict[str, torch.Tensor], cfg: Config, seqs: list[list[int]], rows: list[int],
              targets: list[int], weights: torch.Tensor, steps: int, lr: float, betas: tuple[float, float],
              eps: float, weight_decay: float, max_grad_norm: float) -> tuple[list[float], list[float]]:
    """`steps` AdamW steps on one fixed batch with torch.optim.AdamW and clip_grad_norm_; weight decay
    on the 2-D weight matrices only, not on the RMSNorm weights. Returns the loss before each step and
    the gradient norm (before clipping) of each step."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    decay = [t for t in leaves.values() if t.dim() == 2]
    no_decay = [t for t in leaves.values() if t.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = selected_loss(leaves, cfg, seqs, rows, targets, weights)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(leaves.values()), max_grad_norm)))
        losses.append(float(loss))
        opt.step()
    return losses, norms


# ----------------------------------------------------------------------------------------------
# safetensors, by hand (8-byte LE header length, JSON header, packed little-endian data)

_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        # numpy has no bfloat16: take the raw 16-bit patterns
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.float16:
        return t.numpy().astype("<f2").tobytes()
    if t.dtype == torch.float32:
        return t.numpy().astype("<f4").tobytes()
    raise ValueError(f"unsupported dtype {t.dtype}")


def _tensor_from_bytes(buf: bytes, dtype: str, shape: list[int]) -> torch.Tensor:
    if dtype == "BF16":
        a = np.frombuffer(buf, dtype="<i2").astype(np.int16)
        return torch.from_numpy(a.copy()).view(torch.bfloat16).reshape(shape)
    np_dtype = {"F16": "<f2", "F32": "<f4"}[dtype]
    a = np.frombuffer(buf, dtype=np_dtype).astype(np_dtype[1:])
    return torch.from_numpy(a.copy()).reshape(shape)


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> int:
    """Write tensors (packed in the dict's order); returns the size of the data section."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    chunks, offset = [], 0
    for name, t in tensors.items():
        data = _tensor_bytes(t)
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)
    return offset


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = _tensor_from_bytes(data[begin:end], info["dtype"], info["shape"])
    return out


def shard_names(shards: int) -> list[str]:
    return [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]


def save_hf_dir(path: str, cfg_dict: dict, params: dict[str, torch.Tensor], dtype: str = "F32",
                shards: int = 1) -> None:
    """A Hugging Face checkpoint directory: config.json and model.safetensors, or `shards` files
    model-0000i-of-0000K.safetensors (contiguous runs of tensors of about equal bytes) and
    model.safetensors.index.json."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2, sort_keys=True)
        f.write("\n")
    stored = {k: v.detach().to(DTYPES[dtype]) for k, v in params.items()}
    if shards == 1:
        write_safetensors(os.path.join(path, "model.safetensors"), stored)
        return
    names = list(stored)
    sizes = [stored[n].numel() * stored[n].element_size() for n in names]
    total = sum(sizes)
    groups: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for n, s in zip(names, sizes):
        # assign by the byte position of the tensor's middle, so shards are balanced
        groups[min(shards - 1, int((acc + s / 2) * shards / total))].append(n)
        acc += s
    assert all(groups), "more shards than tensors"
    weight_map = {}
    for fname, group in zip(shard_names(shards), groups):
        write_safetensors(os.path.join(path, fname), {n: stored[n] for n in group})
        weight_map.update({n: fname for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def load_hf_dir(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, tensors in their stored dtype) from a checkpoint directory."""
    with open(os.path.join(path, "config.json")) as f:
        cfg_dict = json.load(f)
    index_path = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        params = {}
        for fname in sorted(set(index["weight_map"].values())):
            params.update(read_safetensors(os.path.join(path, fname)))
    else:
        params = read_safetensors(os.path.join(path, "model.safetensors"))
    return cfg_dict, params
