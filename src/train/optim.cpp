#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "ops/backend.h"

namespace moe {

namespace {

constexpr const char* kGroupNames[PG_COUNT] = {"embeddings", "attention",      "norms",
                                               "router",     "experts",        "shared-experts",
                                               "dense-mlp",  "lm-head",        "mtp"};

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

std::string group_list() {
  std::string s;
  for (int g = 0; g < PG_COUNT; ++g) s += (g ? ", " : "") + std::string(kGroupNames[g]);
  return s;
}

ParamGroup parse_group(const char* flag, const std::string& name) {
  for (int g = 0; g < PG_COUNT; ++g)
    if (name == kGroupNames[g]) return static_cast<ParamGroup>(g);
  fail("%s: unknown group '%s' (one of: %s)", flag, name.c_str(), group_list().c_str());
}

// Comma-separated items; empty items are an error.
std::vector<std::string> split_list(const char* flag, const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (true) {
    const size_t e = s.find(',', b);
    std::string item = s.substr(b, e == std::string::npos ? std::string::npos : e - b);
    if (item.empty()) fail("%s '%s': empty item in the comma list", flag, s.c_str());
    out.push_back(item);
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

int64_t numel(const TensorSpec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n;
}

}  // namespace

const char* param_group_name(ParamGroup g) { return kGroupNames[g]; }

ParamGroup param_group_of(const std::string& n) {
  if (n == "model.embed_tokens.weight") return PG_EMBEDDINGS;
  if (n == "lm_head.weight") return PG_LM_HEAD;
  if (ends_with(n, "norm.weight") || ends_with(n, "layernorm.weight")) return PG_NORMS;
  if (n.rfind("model.layers.", 0) != 0) fail("tensor '%s' belongs to no parameter group", n.c_str());
  if (has(n, ".self_attn.")) return PG_ATTENTION;
  if (ends_with(n, ".eh_proj.weight")) return PG_MTP;
  const bool ffn = has(n, ".mlp.") || has(n, ".block_sparse_moe.");
  if (!ffn) fail("tensor '%s' belongs to no parameter group", n.c_str());
  if (has(n, ".shared_expert.") || has(n, ".shared_experts.") || has(n, ".shared_expert_gate."))
    return PG_SHARED_EXPERTS;
  if (has(n, ".experts.")) return PG_EXPERTS;
  if (has(n, ".gate.") || has(n, ".router.")) return PG_ROUTER;  // gate.weight, gate.noise, bias
  return PG_DENSE_MLP;  // mlp.gate_proj / up_proj / down_proj of a dense layer
}

void param_groups_parse(ParamGroups* g, const std::string& freeze, const std::string& lr_groups) {
  if (!freeze.empty())
    for (const std::string& item : split_list("--freeze", freeze))
      g->frozen[parse_group("--freeze", item)] = true;
  if (lr_groups.empty()) return;
  for (const std::string& item : split_list("--lr-groups", lr_groups)) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      fail("--lr-groups '%s': expected group=multiplier, e.g. experts=0.1", item.c_str());
    const ParamGroup pg = parse_group("--lr-groups", item.substr(0, eq));
    const std::string v = item.substr(eq + 1);
    char* end = nullptr;
    const double m = v.empty() ? NAN : std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(m) || m < 0)
      fail("--lr-groups '%s': the multiplier must be a number >= 0", item.c_str());
    g->lr_mult[pg] = static_cast<float>(m);
  }
}

void param_groups_freeze(TrainModel* tm, const ParamGroups& g) {
  for (size_t i = 0; i < tm->specs.size(); ++i)
    if (g.frozen[param_group_of(tm->specs[i].name)]) tm->trainable[i] = 0;
}

namespace {

// The routed expert a tensor belongs to: "model.layers.{l}.<...>.experts.{e}.<...>" is expert e of
// layer l; "model.layers.{l}.<...>.experts.<name>" (no index) holds every expert of layer l,
// sliced along its first axis. *layer = -1 for any other tensor.
void expert_of_tensor(const std::string& n, int* layer, int* expert) {
  *layer = *expert = -1;
  if (param_group_of(n) != PG_EXPERTS) return;
  *layer = std::atoi(n.c_str() + std::strlen("model.layers."));
  const size_t at = n.find(".experts.") + std::strlen(".experts.");
  if (at < n.size() && std::isdigit(static_cast<unsigned char>(n[at]))) *expert = std::atoi(n.c_str() + at);
}

// One AdamW update of a contiguous range at its own step count t.
void adam_range(const AdamWParams& p, float* w, const float* g, float* m, float* v, int64_t n,
                float lr, bool decay, int64_t t) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(t));
  backend().adamw(w, g, m, v, n, p.beta1, p.beta2, p.eps, static_cast<float>(lr / bc1),
                  static_cast<float>(1.0 / bc2), decay ? lr * p.weight_decay : 0.0f);
}

}  // namespace

void adamw_init(AdamW* opt, const TrainModel& tm, const AdamWParams& p, const ParamGroups& groups) {
  opt->p = p;
  opt->step = 0;
  const size_t n = tm.specs.size();
  opt->state_off.assign(n, -1);
  opt->lr_mult.assign(n, 1.0f);
  opt->ex_layer.assign(n, -1);
  opt->ex_index.assign(n, -1);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    opt->lr_mult[i] = groups.lr_mult[param_group_of(tm.specs[i].name)];
    expert_of_tensor(tm.specs[i].name, &opt->ex_layer[i], &opt->ex_index[i]);
    if (!tm.trainable[i] || !tm.held[i]) continue;  // frozen, or another rank's expert
    opt->state_off[i] = total;
    total += (numel(tm.specs[i]) + 15) / 16 * 16;  // 64-byte aligned, as the arenas
  }
  opt->m.assign(total, 0.0f);
  opt->v.assign(total, 0.0f);
  opt->expert_step.assign(static_cast<size_t>(tm.cfg.n_layers) * std::max(tm.cfg.n_experts, 0), 0);
}

void adamw_step(AdamW* opt, TrainModel* tm, float lr_base,
                const std::vector<std::vector<int64_t>>* received) {
  ++opt->step;
  const int E = tm->cfg.n_experts;
  auto got = [&](int l, int e) {
    return !received || (static_cast<size_t>(l) < received->size() &&
                         static_cast<size_t>(e) < (*received)[l].size() && (*received)[l][e] > 0);
  };
  for (int l = 0; l < tm->cfg.n_layers && E > 0; ++l)
    for (int e = 0; e < E; ++e)
      if (got(l, e)) ++opt->expert_step[static_cast<size_t>(l) * E + e];
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (!tm->trainable[i] || !tm->held[i]) continue;
    MOE_CHECK(opt->state_off[i] >= 0);
    const int64_t n = numel(tm->specs[i]);
    const float lr = lr_base * opt->lr_mult[i];
    float* w = tm->params.data() + tm->offset[i];
    const float* g = tm->grads.data() + tm->offset[i];
    float* m = opt->m.data() + opt->state_off[i];
    float* v = opt->v.data() + opt->state_off[i];
    const int l = opt->ex_layer[i];
    if (l < 0) {
      adam_range(opt->p, w, g, m, v, n, lr, tm->decay[i], opt->step);
      continue;
    }
    // A routed expert's tensor, or E slices of a fused one: skipped in a step without tokens.
    const int e0 = opt->ex_index[i] >= 0 ? opt->ex_index[i] : 0;
    const int ne = opt->ex_index[i] >= 0 ? 1 : E;
    const int64_t len = n / ne;
    for (int q = 0; q < ne; ++q) {
      const int e = e0 + q;
      if (!got(l, e)) continue;
      const int64_t o = q * len;
      adam_range(opt->p, w + o, g + o, m + o, v + o, len, lr, tm->decay[i],
                 opt->expert_step[static_cast<size_t>(l) * E + e]);
    }
  }
}

double grad_clip(TrainModel* tm, float max_norm, Comm* experts) {
  double ss = 0.0, ss_experts = 0.0;  // tensors of no expert; the held experts' tensors
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (!tm->held[i]) continue;
    const int64_t n = numel(tm->specs[i]);
    float* g = tm->grads.data() + tm->offset[i];
    if (!tm->trainable[i]) {
      std::fill(g, g + n, 0.0f);  // frozen: no gradient
      continue;
    }
    double& acc = tm->expert_of[i] >= 0 ? ss_experts : ss;
    for (int64_t j = 0; j < n; ++j) acc += static_cast<double>(g[j]) * g[j];
  }
  if (experts && experts->size() > 1) ss_experts = comm_sum(*experts, ss_experts);
  const double norm = std::sqrt(ss + ss_experts);
  if (max_norm > 0 && norm > max_norm) {
    const float s = static_cast<float>(max_norm / (norm + 1e-6));
    for (float& g : tm->grads) g *= s;
  }
  return norm;
}

float lr_schedule(int64_t step, int64_t total, int64_t warmup, float lr, float min_frac) {
  if (warmup > 0 && step < warmup) return lr * static_cast<float>(step + 1) / warmup;
  if (total <= warmup) return lr;
  const double prog = std::min(1.0, static_cast<double>(step - warmup) / (total - warmup));
  const double cosv = 0.5 * (1.0 + std::cos(M_PI * prog));
  return static_cast<float>(lr * (min_frac + (1.0 - min_frac) * cosv));
}

void router_bias_update(TrainModel* tm, const std::vector<std::vector<int64_t>>& loads, float rate,
                        bool center) {
  const ModelConfig& c = tm->cfg;
  if (!c.router.has_correction_bias || rate == 0.0f) return;
  MOE_CHECK(static_cast<int>(loads.size()) == c.n_layers);
  const int E = c.n_experts;
  std::vector<float> delta(E);
  for (int l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe[l]) continue;
    float* b = const_cast<float*>(tm->w.layers[l].e_bias);
    double mean = 0.0;
    for (int e = 0; e < E; ++e) mean += static_cast<double>(loads[l][e]) / E;
    double dmean = 0.0;
    for (int e = 0; e < E; ++e) {
      const double diff = mean - static_cast<double>(loads[l][e]);
      delta[e] = diff > 0 ? rate : diff < 0 ? -rate : 0.0f;
      dmean += delta[e] / E;
    }
    for (int e = 0; e < E; ++e) b[e] += delta[e] - (center ? static_cast<float>(dmean) : 0.0f);
  }
}

}  // namespace moe
