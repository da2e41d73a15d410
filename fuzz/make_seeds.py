#!/usr/bin/env python3
"""Writes the fuzz seed corpora fuzz/corpus/<target>/seeds/ from the test fixtures (small:
safetensors files as headers only, tokenizers cut to their first few hundred tokens) plus
hand-made edge cases. Run from the repository root; the output is committed. Inputs of several
files join the parts with SEP (fuzz/fuzz_util.h)."""
import glob
import json
import os
import struct

SEP = b"\n=====\n"
ROOT = "fuzz/corpus"


def write(target, name, data):
    d = os.path.join(ROOT, target, "seeds")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def st_header(path):
    b = read(path)
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n])


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def merged_header(paths):
    """One header-only safetensors holding the tensors of several shards, offsets renumbered."""
    out, off = {}, 0
    for p in paths:
        h = st_header(p)
        meta = h.pop("__metadata__", None)
        if meta is not None and "__metadata__" not in out:
            out["__metadata__"] = meta
        for name, t in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            a, b = t["data_offsets"]
            out[name] = dict(t, data_offsets=[off, off + b - a])
            off += b - a
    return out


def model_dirs():
    return sorted(os.path.dirname(p) for p in glob.glob("tests/fixtures/*/config.json"))


def seeds_config():
    seen = set()
    for p in sorted(glob.glob("tests/fixtures/**/config.json", recursive=True)):
        d = os.path.dirname(p)
        gen = os.path.join(d, "generation_config.json")
        data = read(p) + (SEP + read(gen) if os.path.exists(gen) else b"")
        if data in seen:
            continue
        seen.add(data)
        write("config", d.replace("tests/fixtures/", "").replace("/", "_"), data)
    write("config", "edge_empty_object", b"{}")
    write("config", "edge_not_object", b"[1, 2, 3]")
    write("config", "edge_huge_dims", compact({
        "model_type": "mixtral", "vocab_size": 2**31 - 1, "hidden_size": 2**31 - 1,
        "num_hidden_layers": 2**31 - 1, "num_attention_heads": 1, "num_key_value_heads": 1,
        "intermediate_size": 1, "num_local_experts": 2**31 - 1, "num_experts_per_tok": 2**31 - 1}))
    write("config", "edge_negative_dims", compact({
        "model_type": "qwen3_moe", "vocab_size": -1, "hidden_size": 0, "num_hidden_layers": -5,
        "num_attention_heads": -1, "head_dim": -4, "num_experts": 0, "rope_theta": -1.0,
        "rope_scaling": {"type": "yarn", "factor": 0.0}}))
    write("config", "edge_wrong_types", compact({
        "model_type": 7, "vocab_size": "32", "hidden_size": 1.5, "num_hidden_layers": None,
        "rms_norm_eps": "x", "eos_token_id": [1, "2", None]}) + SEP + b'{"eos_token_id": [[]]}')


def seeds_safetensors_model():
    for d in model_dirs():
        cfg = read(os.path.join(d, "config.json"))
        gen_p = os.path.join(d, "generation_config.json")
        gen = read(gen_p) if os.path.exists(gen_p) else b""
        index_p = os.path.join(d, "model.safetensors.index.json")
        name = os.path.basename(d)
        if os.path.exists(index_p):
            index = json.loads(read(index_p))
            shards = sorted(set(index["weight_map"].values()))
            header = merged_header([os.path.join(d, s) for s in shards])
            index["weight_map"] = {k: "model-00001-of-00001.safetensors" for k in index["weight_map"]}
            write("safetensors_model", name, cfg + SEP + gen + SEP + compact(header) + SEP + compact(index))
        else:
            header = st_header(os.path.join(d, "model.safetensors"))
            write("safetensors_model", name, cfg + SEP + gen + SEP + compact(header))
    tiny = read("tests/fixtures/train/softmax_aux_z/batch.safetensors")
    cfg = read("tests/fixtures/train/softmax_aux_z/config.json")
    write("safetensors_model", "raw_small_file", cfg + SEP + SEP + tiny)
    write("safetensors_model", "edge_header_len_past_end", SEP + SEP + struct.pack("<Q", 2**63) + b"{}")
    write("safetensors_model", "edge_overlap_and_bad_dtype", SEP + SEP + compact({
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        "c": {"dtype": "Q9", "shape": [1], "data_offsets": [16, 17]},
        "d": {"dtype": "BF16", "shape": [9223372036854775807, 2], "data_offsets": [0, 0]},
        "__metadata__": {"format": "pt", "moe.format_version": "1", "moe.quant.a": "q4_0:2,2:t"}}))


def small_tokenizer(path, n):
    j = json.loads(read(path))
    m = j["model"]
    vocab = {k: v for k, v in m["vocab"].items() if v < n}
    merges = []
    for mg in m["merges"]:
        a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(mg)
    m["vocab"], m["merges"] = vocab, merges
    added = [t for t in j["added_tokens"] if t["id"] < n]
    for k, t in enumerate(j["added_tokens"][:3]):
        if t["id"] >= n:
            added.append(dict(t, id=n + k))
    j["added_tokens"] = added
    pp = j.get("post_processor") or {}
    for tok in (pp.get("special_tokens") or {}).values():
        ids = [next((a["id"] for a in added if a["content"] == tid), 0) for tid in tok.get("tokens", [])]
        tok["ids"] = ids
    return compact(j)


def seeds_tokenizer():
    texts = json.loads(read("tests/fixtures/tokenizers/goldens.json"))["texts"]
    texts = [t if isinstance(t, str) else t.get("text", "") for t in texts][:12]
    for name in ("llama2", "qwen3", "deepseek_v3"):
        tj = small_tokenizer(f"tests/fixtures/tokenizers/{name}/tokenizer.json", 400)
        for k, t in enumerate(texts[:4]):
            write("tokenizer", f"{name}_{k}", tj + SEP + t.encode())
    byte_level = {
        "version": "1.0", "added_tokens": [
            {"id": 3, "content": "<|end|>", "single_word": False, "lstrip": True, "rstrip": False,
             "normalized": False, "special": True}],
        "normalizer": {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?i:'s)|\\p{L}+|\\s+(?!\\S)|\\s+"},
                          "behavior": "Isolated", "invert": False},
        "post_processor": None, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": "a", "fuse_unk": True,
                  "byte_fallback": True, "vocab": {"a": 0, "b": 1, "ab": 2, "<0x41>": 4},
                  "merges": ["a b"]}}
    write("tokenizer", "handmade_split_regex", compact(byte_level) + SEP + "ab AB 's\u00e9 <|end|>\x85".encode())
    for k, t in enumerate(texts[4:]):
        write("tokenizer", f"handmade_text_{k}", compact(byte_level) + SEP + t.encode())


def seeds_jinja_template():
    cases = json.loads(read("tests/fixtures/chat/engine_cases.json"))["cases"]
    for c in cases:
        write("jinja_template", "engine_" + c["name"], c["template"])
    for p in sorted(glob.glob("tests/fixtures/chat/*.json")):
        j = json.loads(read(p))
        if isinstance(j.get("chat_template"), str):
            write("jinja_template", "chat_" + os.path.basename(p)[:-5], j["chat_template"])


# Order of kTemplates in fuzz/fuzz_chat_messages.cpp.
CHAT_TEMPLATES = ["llama2", "llama3", "llama3_2", "mixtral", "qwen3", "deepseek_v3", "gpt_oss", "gemma3"]


def seeds_chat_messages():
    for c in json.loads(read("tests/fixtures/chat/goldens.json"))["cases"]:
        if c["family"] not in CHAT_TEMPLATES:
            continue
        obj = {"messages": c["messages"], "add_generation_prompt": c.get("add_generation_prompt", False)}
        obj.update(c.get("extra") or {})
        write("chat_messages", f"{c['family']}_{c['name']}",
              bytes([CHAT_TEMPLATES.index(c["family"])]) + compact(obj))
    write("chat_messages", "edge_not_strings", bytes([4]) + compact({"messages": [
        {"role": 1, "content": None}, {"role": "user", "content": [{"type": "text"}]},
        {"role": "assistant", "tool_calls": [{"function": {"arguments": "{"}}]}]}))


def shard(tokens, tb=2, labeled=False):
    head = b"MOETOKS1" + struct.pack("<IIQII", 1, tb, len(tokens), 1 if labeled else 0, 0)
    body = b"".join(struct.pack("<H" if tb == 2 else "<I", t) for t in tokens)
    if labeled:
        body += bytes(k % 3 for k in range(len(tokens))) + bytes(k % 5 for k in range(len(tokens)))
    return head + body


def seeds_token_shard():
    meta = {"format": "moe.cpp token shards", "version": 1, "vocab_size": 64, "eos_token_id": 0,
            "train_tokens": 40, "val_tokens": 20}
    tr = [(7 * k) % 64 for k in range(40)]
    va = [(5 * k) % 64 for k in range(20)]
    write("token_shard", "plain_u16", compact(meta) + SEP + shard(tr) + SEP + shard(va))
    lab = dict(meta, genres=["news", "fiction", "lore"], pos_tags=["NN", "VB", "JJ", "AT", "IN"])
    write("token_shard", "labeled_u16", compact(lab) + SEP + shard(tr, 2, True) + SEP + shard(va, 2, True))
    big = dict(meta, vocab_size=70000)
    write("token_shard", "plain_u32", compact(big) + SEP + shard([69999] + tr, 4) + SEP + shard(va, 4))
    write("token_shard", "edge_short_and_bad_labels",
          compact(dict(lab, genres=[1, None])) + SEP + shard([1]) + SEP + b"MOETOKS1")


def seeds_train_checkpoint():
    d = "tests/fixtures/train/softmax_aux_z"
    model = st_header(os.path.join(d, "model.safetensors"))
    model.pop("__metadata__", None)
    opt, off = {}, 0
    for prefix in ("exp_avg.", "exp_avg_sq."):
        for name, t in sorted(model.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            a, b = t["data_offsets"]
            opt[prefix + name] = dict(t, data_offsets=[off, off + b - a])
            off += b - a
    state = {"format": "moe.cpp trainer state", "version": 1, "step": 3, "adam_step": 3, "seed": 7}
    write("train_checkpoint", "qwen3_moe_small", compact(model) + SEP + compact(opt) + SEP + compact(state))
    write("train_checkpoint", "edge_missing_moments", compact(model) + SEP + b"{}" + SEP + b'{"step": "3"}')


if __name__ == "__main__":
    seeds_config()
    seeds_safetensors_model()
    seeds_tokenizer()
    seeds_jinja_template()
    seeds_chat_messages()
    seeds_token_shard()
    seeds_train_checkpoint()
