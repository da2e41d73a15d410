#!/usr/bin/env python3
"""Training throughput of moe.cpp's default small MoE, built in PyTorch (CPU, float32), as the peer
for bench/train_throughput.sh. Same architecture as `moe train`'s model: RMSNorm, GQA attention
with per-head q/k RMSNorm and RoPE, softmax top-k MoE FFN (experts run only on their tokens, the
way transformers' eager MoE does), Switch aux loss and z-loss, tied=False, AdamW.

Usage: python3 bench/train_torch.py --threads 2 --steps 10 --batch 16 --seq 128 [--layers 4 ...]
Prints one JSON line: {"tokens_per_s": ..., "step_s": [...], "torch": "<version>"}.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--d-model", type=int, default=192)
p.add_argument("--heads", type=int, default=6)
p.add_argument("--experts", type=int, default=8)
p.add_argument("--top-k", type=int, default=2)
p.add_argument("--expert-ffn", type=int, default=384)
p.add_argument("--vocab", type=int, default=4096)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
D, H, E, K, Fw, V = a.d_model, a.heads, a.experts, a.top_k, a.expert_ffn, a.vocab
hd = D // H


class RMSNorm(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def rope(x, cos, sin):  # x [B, H, T, hd], half layout
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = RMSNorm(D), RMSNorm(D)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D, bias=False) for _ in range(4))
        self.qn, self.kn = RMSNorm(hd), RMSNorm(hd)
        self.gate = torch.nn.Linear(D, E, bias=False)
        self.wg = torch.nn.Parameter(torch.randn(E, Fw, D) * 0.02)
        self.wu = torch.nn.Parameter(torch.randn(E, Fw, D) * 0.02)
        self.wd = torch.nn.Parameter(torch.randn(E, D, Fw) * 0.02)

    def forward(self, h, cos, sin, mask):
        B, T, _ = h.shape
        x = self.n1(h)
        q = self.qn(self.q(x).view(B, T, H, hd)).transpose(1, 2)
        k = self.kn(self.k(x).view(B, T, H, hd)).transpose(1, 2)
        v = self.v(x).view(B, T, H, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
        att = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        h = h + self.o(att)
        x = self.n2(h).view(-1, D)
        logits = self.gate(x)
        p = logits.softmax(-1)
        w, idx = p.topk(K, -1)
        out = torch.zeros_like(x)
        for e in range(E):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            xe = x[tok]
            ye = (F.silu(xe @ self.wg[e].t()) * (xe @ self.wu[e].t())) @ self.wd[e].t()
            out.index_add_(0, tok, ye * w[tok, slot, None])
        f = torch.zeros(E).index_add_(0, idx.reshape(-1), torch.ones(idx.numel())) / idx.numel()
        aux = 0.01 * E * (f * p.mean(0)).sum()
        z = 0.001 * torch.logsumexp(logits, -1).pow(2).mean()
        return h + out.view(B, T, D), aux + z


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, D)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(a.layers))
        self.norm = RMSNorm(D)
        self.head = torch.nn.Linear(D, V, bias=False)

    def forward(self, ids, tgt, cos, sin, mask):
        h = self.emb(ids)
        extra = 0.0
        for l in self.layers:
            h, x = l(h, cos, sin, mask)
            extra = extra + x
        logits = self.head(self.norm(h))
        return F.cross_entropy(logits.view(-1, V), tgt.view(-1)) + extra


m = Model()
opt = torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
T = a.seq
inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
ang = torch.arange(T).float()[:, None] * inv[None]
cos, sin = ang.cos(), ang.sin()
mask = torch.full((T, T), float("-inf")).triu(1)
step_s = []
for step in range(a.warmup + a.steps):
    ids = torch.randint(0, V, (a.batch, T))
    tgt = torch.randint(0, V, (a.batch, T))
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = m(ids, tgt, cos, sin, mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
    opt.step()
    dt = time.perf_counter() - t0
    if step >= a.warmup:
        step_s.append(dt)
step_s.sort()
med = step_s[len(step_s) // 2]
print(json.dumps({"tokens_per_s": a.batch * T / med, "step_s": step_s, "torch": torch.__version__,
                  "threads": a.threads}))
