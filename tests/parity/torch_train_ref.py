#!/usr/bin/env python3
# Independent PyTorch reference trainer for the training-parity test (tests/train_parity_test.sh).
#
# What it is: a from-scratch float32 PyTorch implementation of `moe train`'s default model
# (Qwen3-MoE style decoder: RMSNorm, per-head q/k norm, RoPE, softmax top-k router, SwiGLU
# experts) and of its training loop (the splitmix64 batch sampler, AdamW, global-norm clipping,
# warmup + cosine schedule, Switch aux loss and router z-loss). It shares no code with the engine;
# it reads the token shards `moe train` prepares (OUT/data) and starts from the weights of a
# `moe train --steps 0` export (--init DIR), then prints one JSON line per step (ce, grad_norm,
# ...) to --out. The parity test requires `moe train` to match it step for step.
#
# Added here: "route_margin" in each step's record, the smallest gap between a token's K-th and
# (K+1)-th router probability over all MoE layers; below about 1e-7 float32 can route that token
# differently from this trainer, and the runs drift apart from that step on.
#
# Needs Debian's python3-torch (1.13, CPU) and numpy. Run it with --threads 1 on a loaded machine:
# PyTorch's OpenMP threads spin and slow down badly when cores are oversubscribed.
"""Reference trainer: an independent PyTorch (float32, CPU; Debian's python3-torch) implementation of
`moe train`'s default model and loop, for training-parity checks. It reads the token shards that
`moe train` prepares (OUT/data), draws batches with the same splitmix64 sampler, and uses the same
model (Qwen3-MoE style; dense with --experts 1), AdamW, clipping, warmup + cosine schedule, Switch
aux loss and z-loss. Start it from the weights of a `moe train --steps 0` export (--init DIR).
On 2026-12-03 it matched `moe train` step for step (ce to 1e-4, grad norm to 1e-3) for about
21 steps at d 128 / 8 experts, dense and MoE, before discrete routing let the runs drift apart.
Prints one JSON line per step to --out. It mirrors the trainer as it was then: where the trainer
changes on purpose (sampler, schedule, idle experts), change this file with it. Since then: experts
that receive no token are skipped by AdamW on both sides (their gradient stays None here)."""
import argparse, json, math, struct, time, sys
import numpy as np
import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)        # a prepared data folder (train.bin, val.bin, meta.json)
p.add_argument("--init", default="")
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=400)          # schedule length
p.add_argument("--stop-after", type=int, default=0)       # run only this many steps
p.add_argument("--seed", type=int, default=7)
p.add_argument("--init-seed", type=int, default=0)
p.add_argument("--layers", type=int, default=4)
p.add_argument("--d-model", type=int, default=128)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--experts", type=int, default=1)
p.add_argument("--top-k", type=int, default=1)
p.add_argument("--renorm", action="store_true")
p.add_argument("--expert-ffn", type=int, default=512)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--warmup", type=int, default=30)
p.add_argument("--min-lr-frac", type=float, default=0.1)
p.add_argument("--wd", type=float, default=0.1)
p.add_argument("--clip", type=float, default=1.0)
p.add_argument("--aux", type=float, default=0.01)
p.add_argument("--z", type=float, default=0.001)
p.add_argument("--init-std", type=float, default=0.02)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--eval-every", type=int, default=100)
p.add_argument("--eval-windows", type=int, default=64)
p.add_argument("--save-grad-norms", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
M64 = (1 << 64) - 1

# ---------------- data: moe.cpp token shards + the same sampler ----------------
def load_shard(path):
    b = open(path, "rb").read()
    assert b[:8] == b"MOETOKS1"
    ver, tb, n, lab = struct.unpack("<IIQI", b[8:28])
    dt = np.uint16 if tb == 2 else np.uint32
    return np.frombuffer(b, dtype=dt, count=n, offset=32).astype(np.int64)

meta = json.load(open(a.data + "/meta.json"))
V = meta["vocab_size"]
train_tok = load_shard(a.data + "/train.bin")
val_tok = load_shard(a.data + "/val.bin")

def splitmix64(x):
    x = (x + 0x9e3779b97f4a7c15) & M64
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)

def rng_uniform(seed, i):
    return (splitmix64((seed * 0xd1342543de82ef95 + i) & M64) >> 11) * (1.0 / 9007199254740992.0)

def train_batch(step, micro, B, T):
    rng = train_tok.shape[0] - T
    ids = np.empty((B, T), np.int64); tg = np.empty((B, T), np.int64)
    for b in range(B):
        key = ((step << 20) ^ (micro << 10) ^ b) & M64
        start = int(rng_uniform(a.seed ^ 0x7f4a7c15, key) * rng)
        ids[b] = train_tok[start:start + T]; tg[b] = train_tok[start + 1:start + T + 1]
    return torch.from_numpy(ids), torch.from_numpy(tg)

def val_windows(nw, T):
    span = val_tok.shape[0] - T - 1
    out = []
    for w in range(nw):
        s = span * w // (nw - 1) if nw > 1 else 0
        out.append((val_tok[s:s + T], val_tok[s + 1:s + T + 1]))
    return out

# ---------------- model ----------------
D, H, L, E, K, Fw = a.d_model, a.heads, a.layers, a.experts, a.top_k, a.expert_ffn
hd = D // H
EPS = float(np.float32(1e-6))
dense = E == 1

def specs():
    out = [("model.embed_tokens.weight", (V, D)), ("model.norm.weight", (D,)), ("lm_head.weight", (V, D))]
    for l in range(L):
        pre = f"model.layers.{l}."
        out += [(pre + "input_layernorm.weight", (D,)), (pre + "post_attention_layernorm.weight", (D,))]
        at = pre + "self_attn."
        out += [(at + "q_proj.weight", (D, D)), (at + "k_proj.weight", (D, D)), (at + "v_proj.weight", (D, D)),
                (at + "o_proj.weight", (D, D)), (at + "q_norm.weight", (hd,)), (at + "k_norm.weight", (hd,))]
        m = pre + "mlp."
        if dense:
            out += [(m + "gate_proj.weight", (Fw, D)), (m + "up_proj.weight", (Fw, D)), (m + "down_proj.weight", (D, Fw))]
        else:
            out.append((m + "gate.weight", (E, D)))
            for e in range(E):
                pe = f"{m}experts.{e}."
                out += [(pe + "gate_proj.weight", (Fw, D)), (pe + "up_proj.weight", (Fw, D)), (pe + "down_proj.weight", (D, Fw))]
    return out

def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n]); base = 8 + n
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__": continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        s, e = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(b[base + s:base + e], dtype=np.float32).reshape(v["shape"]).copy())
    return out

P = {}
if a.init:
    W = read_st(a.init + "/model.safetensors")
    for name, shape in specs():
        assert tuple(W[name].shape) == shape, (name, W[name].shape, shape)
        P[name] = W[name].clone().requires_grad_(True)
else:
    g = torch.Generator().manual_seed(a.init_seed)
    for name, shape in specs():
        if len(shape) == 1:
            t = torch.ones(shape)
        else:
            sd = a.init_std / math.sqrt(2 * L) if name.endswith(("o_proj.weight", "down_proj.weight")) else a.init_std
            t = torch.randn(shape, generator=g) * sd
        P[name] = t.requires_grad_(True)

def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))

T = a.seq
inv = (1.0 / (np.float32(10000.0) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
ang = np.arange(T, dtype=np.float32)[:, None] * inv[None, :]
COS = torch.from_numpy(np.cos(ang.astype(np.float64)).astype(np.float32))
SIN = torch.from_numpy(np.sin(ang.astype(np.float64)).astype(np.float32))
MASK = torch.full((T, T), float("-inf")).triu(1)

def rope(x):  # (B, T, H, hd), half layout
    h2 = hd // 2
    x1, x2 = x[..., :h2], x[..., h2:]
    c, s = COS[None, :, None, :], SIN[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)

def swiglu(x, gw, uw, dw):
    return (F.silu(x @ gw.t()) * (x @ uw.t())) @ dw.t()

stats = {}
def forward(ids, tg):
    B, T_ = ids.shape
    N = B * T_
    h = P["model.embed_tokens.weight"][ids.reshape(-1)]
    aux = torch.zeros(()); z = torch.zeros(())
    for l in range(L):
        pre = f"model.layers.{l}."; at = pre + "self_attn."
        x = rms(h, P[pre + "input_layernorm.weight"])
        q = rms((x @ P[at + "q_proj.weight"].t()).view(B, T_, H, hd), P[at + "q_norm.weight"])
        k = rms((x @ P[at + "k_proj.weight"].t()).view(B, T_, H, hd), P[at + "k_norm.weight"])
        v = (x @ P[at + "v_proj.weight"].t()).view(B, T_, H, hd)
        q, k = rope(q).transpose(1, 2), rope(k).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + MASK
        att = (s.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2).reshape(N, D)
        h = h + att @ P[at + "o_proj.weight"].t()
        x2 = rms(h, P[pre + "post_attention_layernorm.weight"])
        m = pre + "mlp."
        if dense:
            h = h + swiglu(x2, P[m + "gate_proj.weight"], P[m + "up_proj.weight"], P[m + "down_proj.weight"])
            continue
        logits = x2 @ P[m + "gate.weight"].t()
        pr = logits.softmax(-1)
        w, idx = pr.topk(K, -1)
        top = pr.detach().topk(min(K + 1, E), -1).values  # routing margin: K-th minus (K+1)-th
        stats.setdefault("margin", []).append(float((top[:, K - 1] - top[:, -1]).min()) if K < E else 1.0)
        if a.renorm:
            w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x2)
        for e in range(E):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0: continue
            pe = f"{m}experts.{e}."
            ye = swiglu(x2[tok], P[pe + "gate_proj.weight"], P[pe + "up_proj.weight"], P[pe + "down_proj.weight"])
            out = out.index_add(0, tok, ye * w[tok, slot, None])
        h = h + out
        cnt = torch.zeros(E).index_add_(0, idx.reshape(-1), torch.ones(idx.numel()))
        f = cnt / (N * K)
        aux = aux + a.aux * E * (f * pr.mean(0)).sum()
        z = z + a.z * torch.logsumexp(logits, -1).pow(2).mean()
        stats.setdefault("topw", []).append(float(w.sum(-1).mean()))
        stats.setdefault("load_maxmean", []).append(float(cnt.max() / cnt.mean()))
    logits = rms(h, P["model.norm.weight"]) @ P["lm_head.weight"].t()
    ce = F.cross_entropy(logits, tg.reshape(-1))
    return ce, aux, z

names = [n for n, _ in specs()]
decay = [P[n] for n in names if P[n].dim() >= 2]
nodecay = [P[n] for n in names if P[n].dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": nodecay, "weight_decay": 0.0}],
                        lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

def lr_at(step):
    if a.warmup > 0 and step < a.warmup: return a.lr * (step + 1) / a.warmup
    if a.steps <= a.warmup: return a.lr
    prog = min(1.0, (step - a.warmup) / (a.steps - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))

def evaluate():
    wins = val_windows(a.eval_windows, T)
    tot = 0.0; n = 0
    with torch.no_grad():
        for i in range(0, len(wins), a.batch):
            chunk = wins[i:i + a.batch]
            ids = torch.from_numpy(np.stack([c[0] for c in chunk])); tg = torch.from_numpy(np.stack([c[1] for c in chunk]))
            ce, _, _ = forward(ids, tg)
            tot += float(ce) * tg.numel(); n += tg.numel()
    return tot / n

groups = {"embed": ["embed_tokens"], "lm_head": ["lm_head"], "attn": ["self_attn"], "router": ["mlp.gate.weight"],
          "ffn": ["mlp.experts", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"], "norm": ["norm"]}
def gname(n):
    if "layernorm" in n or n.endswith("norm.weight"): return "norm"
    for k, pats in groups.items():
        if k != "norm" and any(pp in n for pp in pats): return k
    return "other"

fo = open(a.out, "w")
n_run = a.stop_after if a.stop_after > 0 else a.steps
t0 = time.time()
for step in range(n_run):
    ids, tg = train_batch(step, 0, a.batch, T)
    stats.clear()
    for t_ in P.values(): t_.grad = None
    ce, aux, z = forward(ids, tg)
    loss = ce + aux + z
    loss.backward()
    # Experts that got no token keep grad None, so AdamW skips them (no moments, no decay, no
    # step of their own), as moe.cpp does (src/train/optim.h).
    gn_group = {}
    if a.save_grad_norms:
        for n in names:
            if P[n].grad is None: continue
            gg = gname(n); gn_group[gg] = gn_group.get(gg, 0.0) + float(P[n].grad.pow(2).sum())
        gn_group = {k: math.sqrt(v) for k, v in gn_group.items()}
    gnorm = float(torch.nn.utils.clip_grad_norm_([P[n] for n in names], a.clip if a.clip > 0 else float("inf")))
    lr = lr_at(step)
    for gpp in opt.param_groups: gpp["lr"] = lr
    opt.step()
    rec = {"step": step + 1, "loss": float(loss), "ce": float(ce), "aux": float(aux), "z": float(z), "lr": lr, "grad_norm": gnorm}
    if stats: rec["topw"] = sum(stats["topw"]) / len(stats["topw"]); rec["maxmean"] = max(stats["load_maxmean"])
    if stats: rec["route_margin"] = min(stats["margin"])  # smallest top-k probability gap of the step
    if gn_group: rec["gn"] = gn_group
    if (a.eval_every > 0 and (step + 1) % a.eval_every == 0) or step + 1 == n_run:
        rec["val_loss"] = evaluate()
    fo.write(json.dumps(rec) + "\n"); fo.flush()
    if (step + 1) % 20 == 0:
        print(f"step {step+1} ce {float(ce):.4f} {time.time()-t0:.0f}s", file=sys.stderr, flush=True)
