#include "bench/model_bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "infer/forward.h"
#include "model/weights.h"

namespace moe {

namespace {

double vec_bytes(const float* p, int64_t n) { return p ? 4.0 * static_cast<double>(n) : 0.0; }

double mat_bytes(const float* w, const QWeight& q, int64_t rows, int64_t cols) {
  if (w) return 4.0 * static_cast<double>(rows) * cols;
  return q.data ? static_cast<double>(rows * qtype_row_bytes(q.type, cols)) : 0.0;
}

double lin_bytes(const Linear& l) { return mat_bytes(l.w, l.q, l.out, l.in) + vec_bytes(l.b, l.out); }


}  // namespace

double expert_bytes(const ExpertWeights& ew, int64_t D, int64_t F) {
  return mat_bytes(ew.gate, ew.gate_q, F, D) + mat_bytes(ew.up, ew.up_q, F, D) +
         mat_bytes(ew.down, ew.down_q, D, F) + vec_bytes(ew.gate_b, F) + vec_bytes(ew.up_b, F) +
         vec_bytes(ew.down_b, D);
}

namespace {

// Per-token bytes of layer l as the engine holds it, without experts and KV cache.
void layer_engine_bytes(const ModelConfig& c, const LayerWeights& lw, int l, TokenBytes* b) {
  const int64_t D = c.hidden, H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim;
  b->attention += vec_bytes(lw.attn_norm, D) + vec_bytes(lw.ffn_norm, D);
  for (const Linear* x : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.q_a, &lw.q_b, &lw.kv_a, &lw.kv_b})
    b->attention += lin_bytes(*x);
  const bool head = c.qk_norm == QKNORM_HEAD;
  b->attention += vec_bytes(lw.q_norm, head ? hd : H * hd) + vec_bytes(lw.k_norm, head ? hd : KV * hd);
  b->attention += vec_bytes(lw.sinks, H) + vec_bytes(lw.q_a_norm, c.q_lora_rank) +
                  vec_bytes(lw.kv_a_norm, c.kv_lora_rank);
  if (!c.is_moe[l]) {
    b->dense_ffn += lin_bytes(lw.mlp.gate) + lin_bytes(lw.mlp.up) + lin_bytes(lw.mlp.down);
    return;
  }
  b->router += lin_bytes(lw.router) + vec_bytes(lw.e_bias, c.n_experts);
  b->shared += lin_bytes(lw.shared.gate) + lin_bytes(lw.shared.up) + lin_bytes(lw.shared.down) +
               lin_bytes(lw.shared_gate);
}

// KV cache bytes attention reads at a step whose newest position is pos (pos + 1 cached).
double kv_bytes(const ModelConfig& c, int pos) {
  double b = 0.0;
  for (int l = 0; l < c.n_layers; ++l) {
    const int w = c.window.empty() ? 0 : c.window[l];
    const double n = w > 0 ? std::min(pos + 1, w) : pos + 1;
    b += c.mla ? 4.0 * (c.kv_lora_rank + c.rope.dim) * n : 8.0 * c.n_kv_heads * c.head_dim * n;
  }
  return b;
}

bool ends_with(const std::string& s, const char* suf) {
  const size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

int layer_of(const std::string& name) {
  int l = -1;
  return std::sscanf(name.c_str(), "model.layers.%d.", &l) == 1 ? l : -1;
}

// Per-token bytes at the checkpoint's dtypes, without experts and KV cache; expert bytes of one
// expert per layer into per_expert[l].
void stored_bytes(const Model& m, TokenBytes* b, std::vector<double>* per_expert) {
  const ModelConfig& c = m.cfg;
  per_expert->assign(c.n_layers, 0.0);
  for (const TensorSpec& s : model_tensor_specs(c, m.fused_experts)) {
    const StTensor* t = m.archive.find(s.name);
    if (!t) continue;
    const double n = static_cast<double>(t->nbytes);
    const int l = layer_of(s.name);
    if (s.name == "model.embed_tokens.weight") {
      b->embed += n / c.vocab;
      if (m.lm_head == m.embed) b->lm_head += n;
    } else if (ends_with(s.name, "gate.noise.weight")) {
      // noisy top-k's noise projection: unused at inference
    } else if (l < 0) {
      b->lm_head += n;  // lm_head, final norm
    } else if (s.role == TR_EXPERT || s.name.find(".experts.") != std::string::npos) {
      (*per_expert)[l] += n / c.n_experts;
    } else if (s.name.find("shared_expert") != std::string::npos) {
      b->shared += n;
    } else if (s.role == TR_LINEAR) {
      if (c.is_moe[l] || s.name.find("self_attn") != std::string::npos) b->attention += n;
      else b->dense_ffn += n;
    } else if (s.name.find("norm") == std::string::npos && s.name.find("self_attn") == std::string::npos &&
               (s.name.find(".gate.") != std::string::npos || s.name.find(".router.") != std::string::npos)) {
      b->router += n;
    } else {
      b->attention += n;  // norms, attention biases, sinks
    }
  }
}

std::map<std::string, int64_t> proc_status() {
  std::map<std::string, int64_t> out;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string key;
    long long kb = 0;
    if (in >> key >> kb) out[key] = static_cast<int64_t>(kb) * 1024;
  }
  return out;
}

// Touches one byte per page of [p, p + n).
void touch(const void* p, double n) {
  if (!p || n <= 0) return;
  const uint8_t* b = static_cast<const uint8_t*>(p);
  const int64_t len = static_cast<int64_t>(n);
  uint64_t sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
  for (int64_t off = 0; off < len; off += 4096) sum += b[off];
  volatile uint64_t sink = sum;
  (void)sink;
}

void touch_linear(const Linear& l) {
  touch(l.w, 4.0 * l.out * l.in);
  touch(l.b, 4.0 * l.out);
}

void touch_matrix(const float* w, const QWeight& q, int64_t rows, int64_t cols) {
  if (w) touch(w, 4.0 * rows * cols);
  else if (q.data) touch(q.data, static_cast<double>(rows) * q.stride);
}

// Touches every page of the weights a forward pass reads (all layers, all experts, lm_head; the
// embedding table only by rows, so not at all), as a loaded model has them resident.
void touch_weights(const Model& m) {
  const ModelConfig& c = m.cfg;
  const int64_t D = c.hidden, F = c.expert_ffn;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = m.layers[l];
    for (const Linear* x : {&lw.q, &lw.k, &lw.v, &lw.o, &lw.q_a, &lw.q_b, &lw.kv_a, &lw.kv_b,
                            &lw.mlp.gate, &lw.mlp.up, &lw.mlp.down, &lw.router, &lw.shared.gate,
                            &lw.shared.up, &lw.shared.down, &lw.shared_gate})
      touch_linear(*x);
    for (const ExpertWeights& ew : lw.experts) {
      touch_matrix(ew.gate, ew.gate_q, F, D);
      touch_matrix(ew.up, ew.up_q, F, D);
      touch_matrix(ew.down, ew.down_q, D, F);
    }
  }
  touch_matrix(m.lm_head, m.lm_head_q, c.vocab, D);
}

int64_t major_faults() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_majflt;
}

// Loads the checkpoint and touches the pages of every weight a forward pass reads.
ModelBenchInfo load_model(Model* m, const std::string& dir,
                          const std::function<void(const std::string&)>& log) {
  ModelBenchInfo info;
  info.dir = dir;
  const int64_t avail = mem_available();
  if (log) log("loading " + dir);
  model_load(m, dir);
  info.model_type = arch_name(m->cfg.arch);
  const auto it = m->archive.metadata.find("moe.quant_type");
  info.quant_type = it == m->archive.metadata.end() ? "" : it->second;
  info.n_params = m->n_params;
  info.weight_bytes = m->weight_bytes;
  touch_weights(*m);
  std::map<std::string, int64_t> st = proc_status();
  info.resident_bytes = st["RssAnon:"] + st["RssFile:"];
  info.fits_in_memory = info.resident_bytes < avail;
  if (log)
    log(strfmt("  %s of weights; %s resident after touching every weight page%s",
               human_bytes(m->weight_bytes).c_str(), human_bytes(info.resident_bytes).c_str(),
               info.fits_in_memory ? "" : " (more than was available: expect paging)"));
  return info;
}

std::vector<int32_t> random_ids(int n, int vocab, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(g() % static_cast<uint64_t>(vocab));
  return ids;
}

int32_t argmax(const float* v, int n) {
  return static_cast<int32_t>(std::max_element(v, v + n) - v);
}

nlohmann::json bytes_json(const TokenBytes& b) {
  return {{"attention", b.attention}, {"dense_ffn", b.dense_ffn}, {"router", b.router},
          {"shared", b.shared},       {"experts", b.experts},     {"lm_head", b.lm_head},
          {"embed", b.embed},         {"kv_cache", b.kv_cache},   {"total", b.total()}};
}

// The fields every model report starts with.
nlohmann::json report_json(const char* bench, bool quick, const ModelBenchInfo& i,
                           nlohmann::json machine, int tokens, int64_t major_faults,
                           const CpuOthers& cpu) {
  nlohmann::json j;
  j["bench"] = bench;
  j["quick"] = quick;
  j["model"] = {{"dir", i.dir},
                {"model_type", i.model_type},
                {"quant_type", i.quant_type},
                {"params", i.n_params},
                {"weight_bytes", i.weight_bytes},
                {"resident_bytes", i.resident_bytes},
                {"fits_in_memory", i.fits_in_memory}};
  j["machine"] = std::move(machine);
  j["tokens"] = tokens;
  j["major_faults"] = major_faults;
  j["other_cpu"] = cpu.others;
  j["steal"] = cpu.steal;
  return j;
}

std::string model_line(const ModelBenchInfo& i) {
  return strfmt("Model: `%s` (%s, %s), %.2fB parameters, %s of weights, %s resident%s.\n\n",
                i.dir.c_str(), i.model_type.c_str(),
                i.quant_type.empty() ? "as stored" : i.quant_type.c_str(), i.n_params / 1e9,
                human_bytes(i.weight_bytes).c_str(), human_bytes(i.resident_bytes).c_str(),
                i.fits_in_memory ? "" : " — **does not fit in memory: the timings include paging**");
}

}  // namespace

DecodeBenchResult decode_bench_run(const std::string& dir, const DecodeBenchOptions& opt) {
  if (opt.tokens <= 0) fail("decode bench: --tokens must be positive");
  if (opt.prompt <= 0) fail("decode bench: the prompt must have at least one token");
  DecodeBenchResult r;
  r.machine = machine_info();
  r.quick = opt.quick;
  r.tokens = opt.tokens;
  r.prompt = opt.prompt;
  const int64_t bw_bytes = opt.bw_bytes > 0 ? opt.bw_bytes : default_bandwidth_bytes(r.machine.llc_bytes);
  if (opt.log) opt.log(strfmt("measuring DRAM read bandwidth (%s)", human_bytes(bw_bytes).c_str()));
  r.bw = measure_read_bandwidth(bw_bytes, opt.bw_reps);
  Model m;
  r.model = load_model(&m, dir, opt.log);
  const ModelConfig& c = m.cfg;

  // Static per-token bytes.
  TokenBytes base_engine, base_stored;
  std::vector<double> expert_engine(c.n_layers, 0.0), expert_stored;
  for (int l = 0; l < c.n_layers; ++l) {
    layer_engine_bytes(c, m.layers[l], l, &base_engine);
    if (c.is_moe[l] && !m.layers[l].experts.empty())
      expert_engine[l] = expert_bytes(m.layers[l].experts[0], c.hidden, c.expert_ffn);
  }
  base_engine.lm_head = mat_bytes(m.lm_head, m.lm_head_q, c.vocab, c.hidden) + 4.0 * c.hidden;
  base_engine.embed = 4.0 * c.hidden;
  stored_bytes(m, &base_stored, &expert_stored);

  InferState s;
  infer_state_init(&s, m, opt.prompt, opt.prompt + 1 + opt.tokens);
  RouteCapture cap;
  s.capture = &cap;
  const std::vector<int32_t> prompt = random_ids(opt.prompt, c.vocab, opt.seed);
  if (opt.log) opt.log(strfmt("decoding: %d prompt tokens, then %d greedy steps", opt.prompt, opt.tokens));
  infer_forward(m, &s, prompt.data(), opt.prompt, false);
  int32_t next = argmax(s.logits.data(), c.vocab);
  infer_forward(m, &s, &next, 1, false);  // untimed first step
  next = argmax(s.logits.data(), c.vocab);
  std::vector<double> t;
  double experts_sum = 0.0, experts_n = 0.0;
  TokenBytes eng_sum, sto_sum;
  const int n_moe = c.n_moe_layers();
  const int64_t faults0 = major_faults();
  const CpuShare share = cpu_share_start();
  for (int i = 0; i < opt.tokens; ++i) {
    const double t0 = now_s();
    infer_forward(m, &s, &next, 1, false);
    t.push_back(now_s() - t0);
    next = argmax(s.logits.data(), c.vocab);
    double ee = 0.0, es = 0.0;
    for (int l = 0; l < c.n_layers; ++l) {
      if (!c.is_moe[l]) continue;
      std::vector<int32_t> chosen = cap.idx[l];
      chosen.erase(std::remove(chosen.begin(), chosen.end(), -1), chosen.end());
      std::sort(chosen.begin(), chosen.end());
      const double n = static_cast<double>(std::unique(chosen.begin(), chosen.end()) - chosen.begin());
      experts_sum += n;
      ee += n * expert_engine[l];
      es += n * expert_stored[l];
    }
    experts_n += n_moe;
    const double kv = kv_bytes(c, s.pos - 1);
    eng_sum.experts += ee;
    sto_sum.experts += es;
    eng_sum.kv_cache += kv;
    sto_sum.kv_cache += kv;
  }
  r.major_faults = major_faults() - faults0;
  r.cpu = cpu_share_since(share);
  const double n = opt.tokens;
  r.engine = base_engine;
  r.engine.experts = eng_sum.experts / n;
  r.engine.kv_cache = eng_sum.kv_cache / n;
  r.stored = base_stored;
  r.stored.experts = sto_sum.experts / n;
  r.stored.kv_cache = sto_sum.kv_cache / n;
  r.experts_per_layer = experts_n > 0 ? experts_sum / experts_n : 0.0;
  for (double x : t) r.seconds += x;
  r.tok_s = n / r.seconds;
  std::vector<double> sorted = t;
  std::sort(sorted.begin(), sorted.end());
  r.step.reps = opt.tokens;
  r.step.median_s = sorted[sorted.size() / 2];
  r.step.min_s = sorted.front();
  r.step.mean_s = r.seconds / n;
  r.limit_tok_s = r.bw.best_gbps * 1e9 / r.engine.total();
  r.limit_tok_s_stored = r.bw.best_gbps * 1e9 / r.stored.total();
  r.frac = r.tok_s / r.limit_tok_s;
  r.load_end = load_average();
  if (opt.log)
    opt.log(strfmt("  %.2f tokens/s; limit %.2f (engine bytes %s/token), %.0f%%", r.tok_s,
                   r.limit_tok_s, human_bytes(static_cast<int64_t>(r.engine.total())).c_str(),
                   100.0 * r.frac));
  return r;
}

PrefillBenchResult prefill_bench_run(const std::string& dir, const PrefillBenchOptions& opt) {
  if (opt.tokens <= 0) fail("prefill bench: --tokens must be positive");
  if (opt.reps <= 0) fail("prefill bench: --reps must be positive");
  PrefillBenchResult r;
  r.machine = machine_info();
  r.quick = opt.quick;
  r.tokens = opt.tokens;
  if (opt.log) opt.log(strfmt("measuring sgemm (n = %d)", opt.gemm_n));
  r.gemm = measure_sgemm(opt.gemm_n, 3);
  Model m;
  r.model = load_model(&m, dir, opt.log);
  const ModelConfig& c = m.cfg;

  // Flops of one forward: weights used per token (fp32 count) x 2 x T, plus attention products.
  TokenBytes w;
  for (int l = 0; l < c.n_layers; ++l) layer_engine_bytes(c, m.layers[l], l, &w);
  const double T = opt.tokens;
  const double per_token = (w.attention + w.dense_ffn + w.router + w.shared) / 4.0 +
                           static_cast<double>(c.top_k) * 3.0 * c.hidden * c.expert_ffn *
                               c.n_moe_layers();
  double pairs = 0.0;  // (query, key) pairs over all layers
  for (int l = 0; l < c.n_layers; ++l) {
    const int win = c.window.empty() ? 0 : c.window[l];
    for (int t = 0; t < opt.tokens; ++t) pairs += win > 0 ? std::min(t + 1, win) : t + 1;
  }
  const double H = c.n_heads;
  const double per_pair = c.mla ? 2.0 * H * (2.0 * c.kv_lora_rank + c.rope.dim)
                                : 2.0 * H * (c.qk_head_dim() + c.v_dim());
  const double absorb = c.mla ? 2.0 * T * H * c.kv_lora_rank * (c.qk_nope_dim + c.v_head_dim) *
                                    c.n_layers
                              : 0.0;
  r.flops = 2.0 * per_token * T + per_pair * pairs + absorb + 2.0 * c.vocab * c.hidden;

  InferState s;
  infer_state_init(&s, m, opt.tokens, opt.tokens);
  const std::vector<int32_t> ids = random_ids(opt.tokens, c.vocab, opt.seed);
  if (opt.log) opt.log(strfmt("prefill: %d tokens, 1 untimed + %d timed forwards", opt.tokens, opt.reps));
  const int64_t faults0 = major_faults();
  const CpuShare share = cpu_share_start();
  r.time = time_calls(
      [&](int) {
        s.pos = 0;
        infer_forward(m, &s, ids.data(), opt.tokens, false);
      },
      1, opt.reps, opt.reps, 0.0);
  r.major_faults = major_faults() - faults0;
  r.cpu = cpu_share_since(share);
  r.tok_s = T / r.time.median_s;
  r.gflops = r.flops / r.time.median_s / 1e9;
  r.frac_sgemm = r.gflops / r.gemm.best_gflops;
  r.load_end = load_average();
  if (opt.log)
    opt.log(strfmt("  %.1f tokens/s, %.1f GFLOP/s (%.0f%% of sgemm)", r.tok_s, r.gflops,
                   100.0 * r.frac_sgemm));
  return r;
}

std::string decode_bench_json(const DecodeBenchResult& r) {
  nlohmann::json j = report_json("decode", r.quick, r.model,
                                 machine_json(r.machine, r.load_end, &r.bw, nullptr), r.tokens,
                                 r.major_faults, r.cpu);
  j["prompt_tokens"] = r.prompt;
  j["seconds"] = r.seconds;
  j["tokens_per_s"] = r.tok_s;
  j["ms_per_token_median"] = r.step.median_s * 1e3;
  j["ms_per_token_min"] = r.step.min_s * 1e3;
  j["experts_per_moe_layer"] = r.experts_per_layer;
  j["bytes_per_token"] = bytes_json(r.engine);
  j["bytes_per_token_stored"] = bytes_json(r.stored);
  j["limit_tokens_per_s"] = r.limit_tok_s;
  j["limit_tokens_per_s_stored"] = r.limit_tok_s_stored;
  j["frac_of_limit"] = r.frac;
  return j.dump(2) + "\n";
}

std::string decode_bench_markdown(const DecodeBenchResult& r) {
  std::string s = strfmt("# Decode: %s\n\n", r.model.dir.c_str());
  if (r.quick) s += "**Quick run (test settings): the numbers are not measurements.**\n\n";
  s += model_line(r.model) + machine_markdown(r.machine, r.load_end);
  s += "Measured in this run: " + bandwidth_markdown(r.bw) + ".\n\n";
  s += strfmt("%d prompt tokens, 1 untimed step, %d timed greedy steps: **%.2f tokens/s** (median "
              "%.1f ms/token, best %.1f ms); %.2f distinct experts per MoE layer and step; %lld "
              "major page faults while timing; other processes used %.0f%% of the CPUs.\n\n",
              r.prompt, r.tokens, r.tok_s, r.step.median_s * 1e3, r.step.min_s * 1e3,
              r.experts_per_layer, static_cast<long long>(r.major_faults), 100.0 * r.cpu.others);
  s += "| bytes per token | engine (as held in memory) | stored (checkpoint dtypes) |\n"
       "|---|---:|---:|\n";
  const auto row = [&](const char* name, double a, double b) {
    s += strfmt("| %s | %s | %s |\n", name, human_bytes(static_cast<int64_t>(a)).c_str(),
                human_bytes(static_cast<int64_t>(b)).c_str());
  };
  row("attention + norms", r.engine.attention, r.stored.attention);
  row("dense FFN", r.engine.dense_ffn, r.stored.dense_ffn);
  row("router", r.engine.router, r.stored.router);
  row("shared experts", r.engine.shared, r.stored.shared);
  row("routed experts chosen", r.engine.experts, r.stored.experts);
  row("lm_head + final norm", r.engine.lm_head, r.stored.lm_head);
  row("embedding row", r.engine.embed, r.stored.embed);
  row("KV cache (mean)", r.engine.kv_cache, r.stored.kv_cache);
  row("**total**", r.engine.total(), r.stored.total());
  s += strfmt("\nBandwidth limit: %.2f tokens/s at the engine's bytes (measured: %.0f%% of it); "
              "%.2f tokens/s if every matrix ran from its stored dtype.\n",
              r.limit_tok_s, 100.0 * r.frac, r.limit_tok_s_stored);
  return s;
}

std::string prefill_bench_json(const PrefillBenchResult& r) {
  nlohmann::json j = report_json("prefill", r.quick, r.model,
                                 machine_json(r.machine, r.load_end, nullptr, &r.gemm), r.tokens,
                                 r.major_faults, r.cpu);
  j["reps"] = r.time.reps;
  j["seconds_median"] = r.time.median_s;
  j["seconds_min"] = r.time.min_s;
  j["tokens_per_s"] = r.tok_s;
  j["flops"] = r.flops;
  j["gflops"] = r.gflops;
  j["frac_sgemm"] = r.frac_sgemm;
  return j.dump(2) + "\n";
}

std::string prefill_bench_markdown(const PrefillBenchResult& r) {
  std::string s = strfmt("# Prefill: %s\n\n", r.model.dir.c_str());
  if (r.quick) s += "**Quick run (test settings): the numbers are not measurements.**\n\n";
  s += model_line(r.model) + machine_markdown(r.machine, r.load_end);
  s += strfmt("One forward of %d tokens (1 untimed + %d timed): **%.1f tokens/s** (median %.2f s, "
              "best %.2f s); %.1f GFLOP/s = %.0f%% of sgemm (%.1f GFLOP/s at n = %d, measured in "
              "this run; %.1f GFLOP per forward); %lld major page faults while timing; other "
              "processes used %.0f%% of the CPUs.\n",
              r.tokens, r.time.reps, r.tok_s, r.time.median_s, r.time.min_s, r.gflops,
              100.0 * r.frac_sgemm, r.gemm.best_gflops, r.gemm.n, r.flops / 1e9,
              static_cast<long long>(r.major_faults), 100.0 * r.cpu.others);
  return s;
}

}  // namespace moe
