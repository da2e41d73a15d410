#include "model/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"

namespace moe {

using json = nlohmann::json;

namespace {

const char* kArchNames[ARCH_COUNT] = {"mixtral",     "qwen2_moe",   "qwen3_moe", "olmoe",
                                      "deepseek_v2", "deepseek_v3", "gpt_oss",   "moe_cpp"};
const char* kRouterKinds[] = {"token_choice", "noisy_topk", "expert_choice", "hash",
                              "random",       "base",       "sinkhorn",      "reinforce"};
constexpr int kRouterKindCount = sizeof(kRouterKinds) / sizeof(kRouterKinds[0]);

// Typed access to a JSON object with errors that name the file and the field.
struct JReader {
  const json& j;
  const std::string& path;

  bool has(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  const char* first_present(std::initializer_list<const char*> keys) const {
    for (const char* k : keys)
      if (has(k)) return k;
    return nullptr;
  }

  [[noreturn]] void bad(const char* key, const char* what) const {
    fail("%s: field '%s': %s", path.c_str(), key, what);
  }

  double num(const char* key) const {
    if (!has(key)) bad(key, "is missing");
    const json& v = j.at(key);
    if (!v.is_number()) bad(key, "must be a number");
    return v.get<double>();
  }
  int integer(const char* key) const {
    if (!has(key)) bad(key, "is missing");
    const json& v = j.at(key);
    if (!v.is_number_integer()) {
      // Accept integral floats such as 8.0.
      if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
          std::fabs(v.get<double>()) < 2e9)
        return static_cast<int>(v.get<double>());
      bad(key, "must be an integer");
    }
    int64_t x = v.get<int64_t>();
    if (x < -2000000000 || x > 2000000000) bad(key, "is out of range");
    return static_cast<int>(x);
  }
  int integer_or(const char* key, int def) const { return has(key) ? integer(key) : def; }
  double num_or(const char* key, double def) const { return has(key) ? num(key) : def; }
  bool boolean_or(const char* key, bool def) const {
    if (!has(key)) return def;
    const json& v = j.at(key);
    if (!v.is_boolean()) bad(key, "must be true or false");
    return v.get<bool>();
  }
  std::string str_or(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = j.at(key);
    if (!v.is_string()) bad(key, "must be a string");
    return v.get<std::string>();
  }
  // A size: positive, and at most 2^20 (real models stay far below), so a config alone cannot
  // make the loader allocate or compute without bound.
  int positive(const char* key) const {
    int v = integer(key);
    if (v <= 0) bad(key, "must be positive");
    if (v > (1 << 20)) bad(key, "is too large (over 1048576)");
    return v;
  }
  int positive_or(const char* key, int def) const { return has(key) ? positive(key) : def; }
  std::vector<int> int_list_or_empty(const char* key) const {
    std::vector<int> out;
    if (!has(key)) return out;
    const json& v = j.at(key);
    if (!v.is_array()) bad(key, "must be a list of integers");
    for (const json& e : v) {
      if (!e.is_number_integer()) bad(key, "must be a list of integers");
      out.push_back(e.get<int>());
    }
    return out;
  }
};

double yarn_get_mscale(double scale, double m) {
  return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
}

// Reads rope parameters the way transformers merges legacy and v5 keys.
void parse_rope(ModelConfig* cfg, const json& root, const std::string& path, double default_theta,
                const json* arch_default) {
  RopeSpec& r = cfg->rope;
  json rp = json::object();
  const char* src = nullptr;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (root.contains(key) && !root.at(key).is_null()) {
      if (!root.at(key).is_object()) fail("%s: field '%s': must be an object", path.c_str(), key);
      rp = root.at(key);
      src = key;
      break;
    }
  }
  if (!src && arch_default) rp = *arch_default;
  if (!src) src = "rope_parameters";
  std::string field = src;
  JReader top{root, path};
  JReader jr{rp, field};
  auto sub = [&](const char* k) { return strfmt("%s.%s", src, k); };
  auto num_or = [&](const char* k, double def) {
    if (!jr.has(k)) return def;
    if (!rp.at(k).is_number()) fail("%s: field '%s': must be a number", path.c_str(), sub(k).c_str());
    return rp.at(k).get<double>();
  };
  r.theta = jr.has("rope_theta") ? num_or("rope_theta", 0) : top.num_or("rope_theta", default_theta);
  if (!(r.theta > 1.0)) fail("%s: field 'rope_theta': must be > 1", path.c_str());
  std::string type = "default";
  for (const char* k : {"rope_type", "type"}) {
    if (jr.has(k)) {
      if (!rp.at(k).is_string()) fail("%s: field '%s': must be a string", path.c_str(), sub(k).c_str());
      type = rp.at(k).get<std::string>();
      break;
    }
  }
  if (type != "default" && type != "yarn")
    fail("%s: field '%s': rope type '%s' is not supported (supported: default, yarn)", path.c_str(),
         sub("rope_type").c_str(), type.c_str());
  r.type = type;
  if (type == "yarn") {
    r.orig_max_pos = num_or("original_max_position_embeddings", cfg->max_pos);
    r.factor = jr.has("factor") ? num_or("factor", 1.0) : cfg->max_pos / r.orig_max_pos;
    if (!(r.factor > 0)) fail("%s: field '%s': must be positive", path.c_str(), sub("factor").c_str());
    if (!(r.orig_max_pos > 0))
      fail("%s: field '%s': must be positive", path.c_str(),
           sub("original_max_position_embeddings").c_str());
    double bf = num_or("beta_fast", 0), bs = num_or("beta_slow", 0);
    r.beta_fast = bf != 0 ? bf : 32.0;
    r.beta_slow = bs != 0 ? bs : 1.0;
    r.mscale = num_or("mscale", 0);
    r.mscale_all_dim = num_or("mscale_all_dim", 0);
    if (jr.has("truncate")) {
      if (!rp.at("truncate").is_boolean())
        fail("%s: field '%s': must be true or false", path.c_str(), sub("truncate").c_str());
      r.truncate = rp.at("truncate").get<bool>();
    }
    if (jr.has("attention_factor")) {
      r.attention_factor = num_or("attention_factor", 1.0);
    } else if (r.mscale != 0 && r.mscale_all_dim != 0) {
      r.attention_factor =
          yarn_get_mscale(r.factor, r.mscale) / yarn_get_mscale(r.factor, r.mscale_all_dim);
    } else {
      r.attention_factor = yarn_get_mscale(r.factor, 1.0);
    }
  }
}

// inv_freq as transformers computes it (fp32), including the YaRN blend.
void compute_inv_freq(RopeSpec* r) {
  int d = r->dim;
  int half = d / 2;
  r->inv_freq.assign(half, 0.0f);
  for (int i = 0; i < half; ++i) {
    float expo = static_cast<float>(2 * i) / static_cast<float>(d);
    float pos_freq = std::pow(static_cast<float>(r->theta), expo);
    float extrap = 1.0f / pos_freq;
    if (r->type != "yarn") {
      r->inv_freq[i] = extrap;
      continue;
    }
    float interp = 1.0f / (static_cast<float>(r->factor) * pos_freq);
    auto corr = [&](double rot) {
      return d * std::log(r->orig_max_pos / (rot * 2.0 * M_PI)) / (2.0 * std::log(r->theta));
    };
    double lo = corr(r->beta_fast), hi = corr(r->beta_slow);
    if (r->truncate) {
      lo = std::floor(lo);
      hi = std::ceil(hi);
    }
    lo = std::max(lo, 0.0);
    hi = std::min(hi, static_cast<double>(d - 1));
    if (lo == hi) hi += 0.001;
    float ramp = (static_cast<float>(i) - static_cast<float>(lo)) / static_cast<float>(hi - lo);
    ramp = std::min(1.0f, std::max(0.0f, ramp));
    float extrap_w = 1.0f - ramp;
    r->inv_freq[i] = interp * (1.0f - extrap_w) + extrap * extrap_w;
  }
}

std::vector<int> read_eos(const json& j) {
  std::vector<int> out;
  if (!j.contains("eos_token_id")) return out;
  const json& v = j.at("eos_token_id");
  if (v.is_number_integer()) out.push_back(v.get<int>());
  if (v.is_array())
    for (const json& e : v)
      if (e.is_number_integer()) out.push_back(e.get<int>());
  return out;
}

}  // namespace

const char* arch_name(Arch a) { return kArchNames[a]; }

const char* router_kind_name(RouterKind k) { return kRouterKinds[k]; }

bool router_kind_parse(const std::string& s, RouterKind* out) {
  for (int i = 0; i < kRouterKindCount; ++i)
    if (s == kRouterKinds[i]) {
      *out = static_cast<RouterKind>(i);
      return true;
    }
  return false;
}

std::string arch_supported_list() {
  std::string s;
  for (int i = 0; i < ARCH_COUNT; ++i) {
    if (i) s += ", ";
    s += kArchNames[i];
  }
  return s;
}

int ModelConfig::n_moe_layers() const {  // the main model's layers, not the MTP modules'
  int n = 0;
  for (int l = 0; l < n_layers && l < static_cast<int>(is_moe.size()); ++l) n += is_moe[l] ? 1 : 0;
  return n;
}

void config_drop_mtp(ModelConfig* cfg) {
  cfg->mtp_layers = 0;
  cfg->is_moe.resize(cfg->n_layers);
  cfg->window.resize(cfg->n_layers);
}

namespace {

// What every family's parser reads from: the config being filled and the JSON it comes from.
struct ConfigSrc {
  ModelConfig& c;
  const json& root;
  const JReader& j;
  const std::string& path;
  bool attention_bias = false;  // attention_bias (default: true for gpt-oss)
};

Arch parse_arch(const JReader& j, const std::string& path) {
  std::string mt = j.str_or("model_type", "");
  if (mt.empty()) fail("%s: field 'model_type' is missing (supported: %s)", path.c_str(),
                       arch_supported_list().c_str());
  for (int i = 0; i < ARCH_COUNT; ++i)
    if (mt == kArchNames[i]) return static_cast<Arch>(i);
  fail("%s: field 'model_type': '%s' is not supported (supported: %s)", path.c_str(), mt.c_str(),
       arch_supported_list().c_str());
}

bool is_deepseek(Arch a) { return a == ARCH_DEEPSEEK_V2 || a == ARCH_DEEPSEEK_V3; }

// Fields every family has: sizes, norms, heads, expert count and width, special tokens.
void parse_common(ConfigSrc* s) {
  ModelConfig& c = s->c;
  const JReader& j = s->j;
  const Arch a = c.arch;
  c.vocab = j.positive("vocab_size");
  c.hidden = j.positive("hidden_size");
  c.n_layers = j.positive("num_hidden_layers");
  if (c.n_layers > 16384) j.bad("num_hidden_layers", "is too large (over 16384)");  // per-layer specs
  c.n_heads = j.positive("num_attention_heads");
  c.n_kv_heads = j.positive_or("num_key_value_heads", c.n_heads);
  const bool eps5 = a == ARCH_MIXTRAL || a == ARCH_OLMOE || a == ARCH_GPT_OSS;
  c.rms_eps = static_cast<float>(j.num_or("rms_norm_eps", eps5 ? 1e-5 : 1e-6));
  if (!(c.rms_eps > 0)) j.bad("rms_norm_eps", "must be positive");
  c.max_pos = j.positive_or("max_position_embeddings", 4096);
  c.tie_embeddings = j.boolean_or("tie_word_embeddings", false);
  if (c.n_heads % c.n_kv_heads != 0)
    j.bad("num_key_value_heads", "must divide num_attention_heads");
  c.head_dim = j.positive_or("head_dim", 0);
  if (c.head_dim == 0) {
    if (c.hidden % c.n_heads != 0) j.bad("hidden_size", "must be a multiple of num_attention_heads");
    c.head_dim = c.hidden / c.n_heads;
  }
  c.dense_ffn = j.positive_or("intermediate_size", 0);
  c.mla = is_deepseek(a);
  if (a == ARCH_DEEPSEEK_V3 || a == ARCH_MOE_CPP) {
    const char* mkey = j.first_present({"num_nextn_predict_layers", "num_mtp_layers"});
    c.mtp_layers = mkey ? j.integer(mkey) : 0;
    if (c.mtp_layers < 0 || c.mtp_layers > 16) j.bad(mkey, "must be between 0 and 16");
  }
  const int LM = c.n_layers + c.mtp_layers;  // the main layers and the MTP modules' blocks
  c.window.assign(LM, 0);
  s->attention_bias = j.boolean_or("attention_bias", a == ARCH_GPT_OSS);

  const char* ekey = j.first_present({"num_local_experts", "num_experts", "n_routed_experts"});
  if (!ekey) fail("%s: field 'num_local_experts' (or num_experts / n_routed_experts) is missing",
                  s->path.c_str());
  c.n_experts = j.integer(ekey);
  if (c.n_experts < 0) j.bad(ekey, "must be >= 0");
  const char* kkey = j.first_present({"num_experts_per_tok", "experts_per_token"});
  if (!kkey) fail("%s: field 'num_experts_per_tok' is missing", s->path.c_str());
  c.top_k = j.positive(kkey);
  if (c.n_experts > 0 && c.top_k > c.n_experts) j.bad(kkey, "must not exceed the number of experts");
  const bool uses_moe_width =
      a == ARCH_QWEN2_MOE || a == ARCH_QWEN3_MOE || a == ARCH_MOE_CPP || is_deepseek(a);
  c.expert_ffn = uses_moe_width ? j.positive("moe_intermediate_size") : j.positive("intermediate_size");
  c.is_moe.assign(LM, 1);
  c.eos_ids = read_eos(s->root);
  c.bos_id = j.integer_or("bos_token_id", -1);
}

// Sliding windows of width w on the layers layer_types names (gpt-oss, Qwen2-MoE); without
// layer_types, gpt-oss alternates from layer 0 and Qwen2-MoE uses max_window_layers.
void parse_layer_windows(ConfigSrc* s, int w) {
  ModelConfig& c = s->c;
  const JReader& j = s->j;
  if (j.has("layer_types")) {
    const json& lt = s->root.at("layer_types");
    if (!lt.is_array() || static_cast<int>(lt.size()) != c.n_layers)
      j.bad("layer_types", "must be a list with one entry per layer");
    for (int i = 0; i < c.n_layers; ++i) {
      if (!lt[i].is_string()) j.bad("layer_types", "entries must be strings");
      std::string t = lt[i].get<std::string>();
      if (t == "sliding_attention") c.window[i] = w;
      else if (t != "full_attention")
        fail("%s: field 'layer_types': unknown layer type '%s'", s->path.c_str(), t.c_str());
    }
  } else if (c.arch == ARCH_GPT_OSS) {
    for (int i = 0; i < c.n_layers; i += 2) c.window[i] = w;
  } else {
    int mwl = j.integer_or("max_window_layers", 28);
    for (int i = 0; i < c.n_layers; ++i)
      if (i % 2 == 0 && i < mwl) c.window[i] = w;
  }
}

// Qwen-style dense layers: mlp_only_layers and decoder_sparse_step.
void parse_sparse_layers(ConfigSrc* s) {
  ModelConfig& c = s->c;
  std::vector<int> only = s->j.int_list_or_empty("mlp_only_layers");
  int step = s->j.positive_or("decoder_sparse_step", 1);
  for (int i = 0; i < c.n_layers + c.mtp_layers; ++i) {
    bool dense = false;
    for (int l : only) dense |= l == i;
    c.is_moe[i] = !dense && c.n_experts > 0 && (i + 1) % step == 0;
  }
}

int first_k_dense(ConfigSrc* s) {
  int k = s->j.integer_or("first_k_dense_replace", 0);
  if (k < 0) s->j.bad("first_k_dense_replace", "must be >= 0");
  return k;
}

void parse_mixtral(ConfigSrc* s) {
  int w = s->j.integer_or("sliding_window", 0);
  if (w < 0) s->j.bad("sliding_window", "must be >= 0");
  s->c.window.assign(s->c.n_layers, w);
  s->c.router.norm_topk = true;
}

void parse_qwen_moe(ConfigSrc* s) {
  ModelConfig& c = s->c;
  const JReader& j = s->j;
  if (c.arch == ARCH_QWEN2_MOE) {
    c.qkv_bias = j.boolean_or("qkv_bias", true);
  } else {
    c.qkv_bias = c.o_bias = s->attention_bias;
    c.qk_norm = QKNORM_HEAD;
  }
  if (j.boolean_or("use_sliding_window", false)) {
    int w = j.integer_or("sliding_window", 4096);
    if (w <= 0) j.bad("sliding_window", "must be positive when sliding attention is used");
    if (c.arch == ARCH_QWEN3_MOE) c.window.assign(c.n_layers, w);
    else parse_layer_windows(s, w);
  }
  parse_sparse_layers(s);
  c.router.norm_topk = j.boolean_or("norm_topk_prob", false);
  if (c.arch == ARCH_QWEN2_MOE) {
    c.shared_ffn = j.integer_or("shared_expert_intermediate_size", 5632);
    if (c.shared_ffn < 0) j.bad("shared_expert_intermediate_size", "must be >= 0");
    c.shared_gate = c.shared_ffn > 0;
  }
}

void parse_olmoe(ConfigSrc* s) {
  ModelConfig& c = s->c;
  c.qkv_bias = c.o_bias = s->attention_bias;
  c.qk_norm = QKNORM_FULL;
  c.clip_qkv = static_cast<float>(s->j.num_or("clip_qkv", 0.0));
  if (c.clip_qkv < 0) s->j.bad("clip_qkv", "must be positive");
  c.router.norm_topk = s->j.boolean_or("norm_topk_prob", false);
}

void parse_deepseek(ConfigSrc* s) {
  ModelConfig& c = s->c;
  const JReader& j = s->j;
  c.o_bias = s->attention_bias;  // MLA: q_a_proj, kv_a_proj_with_mqa and o_proj
  c.q_lora_rank = j.has("q_lora_rank") ? j.positive("q_lora_rank") : 0;
  c.kv_lora_rank = j.positive("kv_lora_rank");
  c.qk_nope_dim = j.positive("qk_nope_head_dim");
  c.qk_rope_dim = j.positive("qk_rope_head_dim");
  c.v_head_dim = j.positive("v_head_dim");
  if (c.qk_rope_dim % 2) j.bad("qk_rope_head_dim", "must be even");
  c.head_dim = c.qk_rope_dim;
  const int k = first_k_dense(s);
  for (int i = 0; i < c.n_layers + c.mtp_layers; ++i) c.is_moe[i] = i >= k;
  RouterSpec& r = c.router;
  if (c.arch == ARCH_DEEPSEEK_V2) {
    std::string m = j.str_or("topk_method", "greedy");
    if (m == "group_limited_greedy") r.group = GROUP_MAX;
    else if (m != "greedy")
      fail("%s: field 'topk_method': '%s' is not supported for deepseek_v2 (supported: greedy, "
           "group_limited_greedy)", s->path.c_str(), m.c_str());
  } else {
    r.score = SCORE_SIGMOID;
    r.has_correction_bias = true;
    r.group = GROUP_TOP2_SUM;
    r.norm_topk = j.boolean_or("norm_topk_prob", true);
    r.norm_eps = 1e-20f;
  }
  r.scale = static_cast<float>(j.num_or("routed_scaling_factor", 1.0));
  int ns = j.integer_or("n_shared_experts", 0);
  if (ns < 0) j.bad("n_shared_experts", "must be >= 0");
  c.shared_ffn = ns * c.expert_ffn;
}

void parse_gpt_oss(ConfigSrc* s) {
  ModelConfig& c = s->c;
  c.qkv_bias = c.o_bias = s->attention_bias;
  c.sinks = true;
  int w = s->j.integer_or("sliding_window", 128);
  if (w <= 0) s->j.bad("sliding_window", "must be positive when sliding attention is used");
  parse_layer_windows(s, w);
  c.router.topk_then_softmax = true;
  c.router.has_bias = true;
  c.act = ACT_SWIGLU_OAI;
  c.expert_bias = true;
}

// moe.cpp's own checkpoints: the router is described by a "router" object.
void parse_moe_cpp_router(ConfigSrc* s) {
  const JReader& j = s->j;
  const std::string& path = s->path;
  RouterSpec& r = s->c.router;
  if (!j.has("router")) j.bad("router", "is missing");
  const json& ro = s->root.at("router");
  if (!ro.is_object()) j.bad("router", "must be an object");
  const std::string rpath = path + " (router)";
  JReader jr{ro, rpath};
  auto sub = [&](const char* k) { return strfmt("router.%s", k); };
  std::string kind = jr.str_or("kind", "token_choice");
  if (!router_kind_parse(kind, &r.kind))
    fail("%s: field '%s': unknown router kind '%s'", path.c_str(), sub("kind").c_str(), kind.c_str());
  std::string score = jr.str_or("score", "softmax");
  if (score == "sigmoid") r.score = SCORE_SIGMOID;
  else if (score != "softmax")
    fail("%s: field '%s': must be 'softmax' or 'sigmoid'", path.c_str(), sub("score").c_str());
  r.topk_then_softmax = jr.boolean_or("topk_then_softmax", false);
  r.norm_topk = jr.boolean_or("norm_topk_prob", false);
  r.has_correction_bias = jr.boolean_or("correction_bias", false);
  r.scale = static_cast<float>(jr.num_or("routed_scaling_factor", 1.0));
  if (r.score == SCORE_SIGMOID && r.norm_topk) r.norm_eps = 1e-20f;
  int ng = jr.integer_or("n_group", 1);
  if (ng > 1) r.group = r.score == SCORE_SIGMOID ? GROUP_TOP2_SUM : GROUP_MAX;
}

void parse_moe_cpp(ConfigSrc* s) {
  ModelConfig& c = s->c;
  const JReader& j = s->j;
  c.qkv_bias = j.boolean_or("qkv_bias", false);
  std::string qn = j.str_or("qk_norm", "head");
  if (qn == "head") c.qk_norm = QKNORM_HEAD;
  else if (qn == "full") c.qk_norm = QKNORM_FULL;
  else if (qn != "none") j.bad("qk_norm", "must be 'none', 'head' or 'full'");
  parse_sparse_layers(s);
  const int k = first_k_dense(s);
  for (int i = 0; i < std::min(k, c.n_layers); ++i) c.is_moe[i] = 0;
  parse_moe_cpp_router(s);
  if (c.router.kind == ROUTER_BASE && c.n_experts > 0 && c.top_k != 1)
    fail("%s: field 'router.kind': base routing gives each token one expert, so "
         "num_experts_per_tok must be 1 (got %d)", s->path.c_str(), c.top_k);
  c.shared_ffn = j.integer_or("shared_expert_intermediate_size", 0);
  if (c.shared_ffn < 0) j.bad("shared_expert_intermediate_size", "must be >= 0");
  c.shared_gate = c.shared_ffn > 0 && j.boolean_or("shared_expert_gate", false);
}

// Rope (theta, type, layout, inverse frequencies) and the attention scale.
void parse_rope_and_scale(ConfigSrc* s) {
  ModelConfig& c = s->c;
  const Arch a = c.arch;
  const bool ds = is_deepseek(a);
  double theta_default = a == ARCH_MIXTRAL ? 1e6 : a == ARCH_GPT_OSS ? 150000.0 : 10000.0;
  json oss_default = {{"rope_type", "yarn"},   {"factor", 32.0},      {"beta_fast", 32.0},
                      {"beta_slow", 1.0},      {"truncate", false},
                      {"original_max_position_embeddings", 4096}};
  parse_rope(&c, s->root, s->path, theta_default, a == ARCH_GPT_OSS ? &oss_default : nullptr);
  c.rope.dim = ds ? c.qk_rope_dim : c.head_dim;
  if (c.rope.dim % 2) s->j.bad("head_dim", "must be even for rotary embeddings");
  c.rope.layout = ROPE_HALF;
  if (a == ARCH_DEEPSEEK_V2 || (a == ARCH_DEEPSEEK_V3 && s->j.boolean_or("rope_interleave", true)))
    c.rope.layout = ROPE_INTERLEAVED;
  compute_inv_freq(&c.rope);
  if (ds) {
    double sc = 1.0 / std::sqrt(static_cast<double>(c.qk_nope_dim + c.qk_rope_dim));
    if (c.rope.type != "default" && c.rope.mscale_all_dim != 0) {
      double m = yarn_get_mscale(c.rope.factor, c.rope.mscale_all_dim);
      sc *= m * m;
    }
    c.attn_scale = static_cast<float>(sc);
  } else {
    c.attn_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  }
}

// Group-limited routing (n_group, topk_group), from the router object for moe_cpp.
void parse_router_groups(ConfigSrc* s) {
  ModelConfig& c = s->c;
  RouterSpec& r = c.router;
  if (r.group == GROUP_NONE) return;
  const bool own = c.arch == ARCH_MOE_CPP;
  const std::string gpath = own ? s->path + " (router)" : s->path;
  JReader jg{own ? s->root.at("router") : s->root, gpath};
  const JReader& j = s->j;
  r.n_group = jg.positive_or("n_group", 1);
  r.topk_group = jg.positive_or("topk_group", r.n_group);
  if (r.n_group > 64) j.bad("n_group", "must be at most 64");
  if (c.n_experts % r.n_group) j.bad("n_group", "must divide the number of experts");
  if (r.topk_group > r.n_group) j.bad("topk_group", "must not exceed n_group");
  int gsize = c.n_experts / r.n_group;
  if (r.group == GROUP_TOP2_SUM && gsize < 2) j.bad("n_group", "leaves groups of fewer than 2 experts");
  if (c.top_k > r.topk_group * gsize) j.bad("topk_group", "keeps fewer experts than num_experts_per_tok");
}

}  // namespace

void config_parse(ModelConfig* cfg, const std::string& text, const std::string& path) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("%s: malformed JSON at byte %zu", path.c_str(), static_cast<size_t>(e.byte));
  } catch (const json::exception&) {  // out_of_range: a number beyond double
    fail("%s: malformed JSON: a number is out of range", path.c_str());
  }
  if (!root.is_object()) fail("%s: top level must be a JSON object", path.c_str());
  JReader j{root, path};
  ModelConfig& c = *cfg;
  c = ModelConfig();
  c.path = path;
  c.arch = parse_arch(j, path);
  ConfigSrc s{c, root, j, path};
  parse_common(&s);
  switch (c.arch) {
    case ARCH_MIXTRAL: parse_mixtral(&s); break;
    case ARCH_QWEN2_MOE:
    case ARCH_QWEN3_MOE: parse_qwen_moe(&s); break;
    case ARCH_OLMOE: parse_olmoe(&s); break;
    case ARCH_DEEPSEEK_V2:
    case ARCH_DEEPSEEK_V3: parse_deepseek(&s); break;
    case ARCH_GPT_OSS: parse_gpt_oss(&s); break;
    case ARCH_MOE_CPP: parse_moe_cpp(&s); break;
    default: MOE_CHECK(false);
  }
  parse_rope_and_scale(&s);
  const char* ekey = j.first_present({"num_local_experts", "num_experts", "n_routed_experts"});
  if (c.n_moe_layers() > 0 && c.n_experts <= 0) j.bad(ekey, "must be positive");
  // The expert tensors a checkpoint of this config has (3 per expert and MoE layer), bounded.
  if (static_cast<int64_t>(c.n_moe_layers()) * c.n_experts > (1 << 20))
    j.bad(ekey, "too many experts for the number of layers (over 2^20 expert FFNs)");
  if (c.n_moe_layers() < c.n_layers && c.dense_ffn <= 0)
    j.bad("intermediate_size", "is needed by the dense layers");
  parse_router_groups(&s);
}

void config_load(ModelConfig* cfg, const std::string& dir) {
  std::string path = dir + "/config.json";
  config_parse(cfg, read_text_file(path), path);
  std::string gpath = dir + "/generation_config.json";
  if (file_exists(gpath)) {
    json g;
    try {
      g = json::parse(read_text_file(gpath));
    } catch (const json::parse_error& e) {
      fail("%s: malformed JSON at byte %zu", gpath.c_str(), static_cast<size_t>(e.byte));
    } catch (const json::exception&) {  // out_of_range: a number beyond double
      fail("%s: malformed JSON: a number is out of range", gpath.c_str());
    }
    if (g.is_object()) {
      std::vector<int> eos = read_eos(g);
      if (!eos.empty()) cfg->eos_ids = eos;
    }
  }
}

}  // namespace moe

namespace moe {

namespace {

bool all_moe(const ModelConfig& c) {
  for (char m : c.is_moe)
    if (!m) return false;
  return true;
}

// Layers that are dense, as Qwen's mlp_only_layers.
json dense_layer_list(const ModelConfig& c) {
  json l = json::array();
  for (int i = 0; i < c.n_layers + c.mtp_layers; ++i)
    if (!c.is_moe[i]) l.push_back(i);
  return l;
}

// Leading dense layers followed only by MoE layers (DeepSeek's first_k_dense_replace), or -1.
int leading_dense(const ModelConfig& c) {
  int k = 0;
  while (k < c.n_layers && !c.is_moe[k]) ++k;
  for (int i = k; i < c.n_layers; ++i)
    if (!c.is_moe[i]) return -1;
  return k;
}

// The one window every layer has, or -1 if they differ.
int uniform_window(const ModelConfig& c) {
  for (int w : c.window)
    if (w != c.window[0]) return -1;
  return c.window.empty() ? 0 : c.window[0];
}

void rope_json(json* j, const RopeSpec& r) {
  (*j)["rope_theta"] = r.theta;
  if (r.type != "yarn") {
    (*j)["rope_scaling"] = {{"rope_type", "default"}};  // gpt-oss's default would be yarn
    return;
  }
  json y = json::object();
  y["type"] = "yarn";
  y["factor"] = r.factor;
  y["original_max_position_embeddings"] = r.orig_max_pos;
  y["beta_fast"] = r.beta_fast;
  y["beta_slow"] = r.beta_slow;
  if (r.mscale != 0) y["mscale"] = r.mscale;
  if (r.mscale_all_dim != 0) y["mscale_all_dim"] = r.mscale_all_dim;
  y["truncate"] = r.truncate;
  y["attention_factor"] = r.attention_factor;
  (*j)["rope_scaling"] = y;
}

// The fields every config.json written here has, for architecture a (rope and the FFN fields
// are the caller's).
json common_json(const ModelConfig& c, Arch a) {
  static const char* kClass[ARCH_COUNT] = {"MixtralForCausalLM", "Qwen2MoeForCausalLM",
                                           "Qwen3MoeForCausalLM", "OlmoeForCausalLM",
                                           "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM",
                                           "GptOssForCausalLM", "MoeCppForCausalLM"};
  json j = json::object();
  j["architectures"] = json::array({kClass[a]});
  j["model_type"] = arch_name(a);
  j["vocab_size"] = c.vocab;
  j["hidden_size"] = c.hidden;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rms_norm_eps"] = c.rms_eps;
  j["max_position_embeddings"] = c.max_pos;
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["hidden_act"] = "silu";
  j["dtype"] = "float32";
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (!c.eos_ids.empty())
    j["eos_token_id"] = c.eos_ids.size() == 1 ? json(c.eos_ids[0]) : json(c.eos_ids);
  j["num_experts_per_tok"] = c.top_k;
  return j;
}

// The keys of c's own Hugging Face family (c.arch, not moe_cpp) that its parser reads. Whether
// they express c exactly is checked by parsing them back (same_config).
json family_json(const ModelConfig& c) {
  const Arch a = c.arch;
  const RouterSpec& r = c.router;
  json j = common_json(c, a);
  rope_json(&j, c.rope);
  const int win = uniform_window(c);
  switch (a) {
    case ARCH_MIXTRAL:
      j["num_local_experts"] = c.n_experts;
      j["intermediate_size"] = c.expert_ffn;
      j["sliding_window"] = win > 0 ? json(win) : json(nullptr);
      break;
    case ARCH_OLMOE:
      j["num_experts"] = c.n_experts;
      j["intermediate_size"] = c.expert_ffn;
      j["norm_topk_prob"] = r.norm_topk;
      j["attention_bias"] = c.qkv_bias;
      if (c.clip_qkv > 0) j["clip_qkv"] = c.clip_qkv;
      break;
    case ARCH_QWEN2_MOE:
    case ARCH_QWEN3_MOE:
      j["num_experts"] = c.n_experts;
      j["moe_intermediate_size"] = c.expert_ffn;
      j["intermediate_size"] = c.dense_ffn > 0 ? c.dense_ffn : c.expert_ffn;
      j["norm_topk_prob"] = r.norm_topk;
      j["decoder_sparse_step"] = 1;
      j["mlp_only_layers"] = dense_layer_list(c);
      if (a == ARCH_QWEN2_MOE) {
        j["shared_expert_intermediate_size"] = c.shared_ffn;
        j["qkv_bias"] = c.qkv_bias;
      } else {
        j["attention_bias"] = c.qkv_bias;
      }
      j["use_sliding_window"] = a == ARCH_QWEN3_MOE && win > 0;
      if (a == ARCH_QWEN3_MOE && win > 0) j["sliding_window"] = win;
      break;
    case ARCH_DEEPSEEK_V2:
    case ARCH_DEEPSEEK_V3:
      j["n_routed_experts"] = c.n_experts;
      j["moe_intermediate_size"] = c.expert_ffn;
      j["intermediate_size"] = c.dense_ffn > 0 ? c.dense_ffn : c.expert_ffn;
      j["n_shared_experts"] = c.expert_ffn > 0 ? c.shared_ffn / c.expert_ffn : 0;
      j["first_k_dense_replace"] = std::max(0, leading_dense(c));
      if (c.q_lora_rank > 0) j["q_lora_rank"] = c.q_lora_rank;
      else j["q_lora_rank"] = nullptr;
      j["kv_lora_rank"] = c.kv_lora_rank;
      j["qk_nope_head_dim"] = c.qk_nope_dim;
      j["qk_rope_head_dim"] = c.qk_rope_dim;
      j["v_head_dim"] = c.v_head_dim;
      j["attention_bias"] = c.o_bias;
      j["routed_scaling_factor"] = r.scale;
      j["n_group"] = r.n_group;
      j["topk_group"] = r.topk_group;
      if (a == ARCH_DEEPSEEK_V2) {
        j["topk_method"] = r.group == GROUP_MAX ? "group_limited_greedy" : "greedy";
      } else {
        j["norm_topk_prob"] = r.norm_topk;
        j["rope_interleave"] = c.rope.layout == ROPE_INTERLEAVED;
        j["num_nextn_predict_layers"] = c.mtp_layers;
      }
      break;
    case ARCH_GPT_OSS: {
      j["num_local_experts"] = c.n_experts;
      j["intermediate_size"] = c.expert_ffn;
      j["attention_bias"] = c.o_bias;
      int w = 0;
      json lt = json::array();
      for (int x : c.window) {
        if (x > 0) w = x;
        lt.push_back(x > 0 ? "sliding_attention" : "full_attention");
      }
      j["sliding_window"] = w > 0 ? w : 128;
      j["layer_types"] = lt;
      break;
    }
    default:
      break;
  }
  return j;
}

// Whether b (c written by family_json and parsed back) is the model c describes.
bool same_config(const ModelConfig& a, const ModelConfig& b) {
  const RopeSpec &ra = a.rope, &rb = b.rope;
  const RouterSpec &xa = a.router, &xb = b.router;
  const bool has_dense = a.n_moe_layers() < a.n_layers;
  return a.arch == b.arch && a.vocab == b.vocab && a.hidden == b.hidden &&
         a.n_layers == b.n_layers && a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads &&
         a.head_dim == b.head_dim && a.rms_eps == b.rms_eps &&
         a.tie_embeddings == b.tie_embeddings && a.qkv_bias == b.qkv_bias &&
         a.o_bias == b.o_bias && a.qk_norm == b.qk_norm && a.clip_qkv == b.clip_qkv &&
         a.sinks == b.sinks && a.window == b.window && a.attn_scale == b.attn_scale &&
         ra.type == rb.type && ra.dim == rb.dim && ra.layout == rb.layout &&
         ra.attention_factor == rb.attention_factor && ra.inv_freq == rb.inv_freq &&
         a.mla == b.mla && a.q_lora_rank == b.q_lora_rank && a.kv_lora_rank == b.kv_lora_rank &&
         a.qk_nope_dim == b.qk_nope_dim && a.qk_rope_dim == b.qk_rope_dim &&
         a.v_head_dim == b.v_head_dim && (!has_dense || a.dense_ffn == b.dense_ffn) &&
         a.is_moe == b.is_moe && a.n_experts == b.n_experts && a.top_k == b.top_k &&
         a.expert_ffn == b.expert_ffn && xa.kind == xb.kind && xa.score == xb.score &&
         xa.topk_then_softmax == xb.topk_then_softmax && xa.has_bias == xb.has_bias &&
         xa.has_correction_bias == xb.has_correction_bias && xa.group == xb.group &&
         (xa.group == GROUP_NONE || (xa.n_group == xb.n_group && xa.topk_group == xb.topk_group)) &&
         xa.norm_topk == xb.norm_topk && xa.norm_eps == xb.norm_eps && xa.scale == xb.scale &&
         a.act == b.act && a.expert_bias == b.expert_bias && a.act_alpha == b.act_alpha &&
         a.act_limit == b.act_limit && a.shared_ffn == b.shared_ffn &&
         a.shared_gate == b.shared_gate && a.bos_id == b.bos_id && a.eos_ids == b.eos_ids &&
         a.mtp_layers == b.mtp_layers;
}

}  // namespace

std::string config_to_json(ModelConfig* cfg) {
  ModelConfig& c = *cfg;
  if (c.arch != ARCH_MOE_CPP && c.arch < ARCH_COUNT) {
    // A model of a Hugging Face family (fine-tuned from its checkpoint) is written back in that
    // family's form when it expresses the model exactly.
    const std::string text = family_json(c).dump(2) + "\n";
    ModelConfig back;
    bool ok = true;
    try {
      config_parse(&back, text, c.path);
    } catch (const MoeError&) {
      ok = false;
    }
    if (ok && same_config(c, back)) return text;
  }
  const RouterSpec& r = c.router;
  const bool plain_router = r.kind == ROUTER_TOKEN_CHOICE && r.score == SCORE_SOFTMAX &&
                            !r.has_correction_bias && r.group == GROUP_NONE && r.scale == 1.0f &&
                            !r.has_bias && !r.topk_then_softmax;
  const bool plain_attn = !c.o_bias && !c.sinks && !c.mla && c.clip_qkv == 0.0f &&
                          std::all_of(c.window.begin(), c.window.end(), [](int w) { return w == 0; });
  Arch a = ARCH_MOE_CPP;
  // MTP modules are written in DeepSeek-V3's layout, which only deepseek_v3 and moe_cpp read.
  if (plain_router && plain_attn && c.act == ACT_SWIGLU && c.mtp_layers == 0) {
    if (c.shared_ffn == 0 && c.qk_norm == QKNORM_HEAD && !c.qkv_bias) a = ARCH_QWEN3_MOE;
    else if (c.shared_ffn > 0 && c.shared_gate && c.qk_norm == QKNORM_NONE && c.qkv_bias)
      a = ARCH_QWEN2_MOE;
    else if (c.shared_ffn == 0 && c.qk_norm == QKNORM_FULL && !c.qkv_bias && all_moe(c) &&
             c.expert_ffn == c.dense_ffn)
      a = ARCH_OLMOE;
    else if (c.shared_ffn == 0 && c.qk_norm == QKNORM_NONE && !c.qkv_bias && all_moe(c) &&
             r.norm_topk)
      a = ARCH_MIXTRAL;
  }
  c.arch = a;
  json j = common_json(c, a);
  j["rope_theta"] = c.rope.theta;
  switch (a) {
    case ARCH_MIXTRAL:
    case ARCH_OLMOE:
      j[a == ARCH_MIXTRAL ? "num_local_experts" : "num_experts"] = c.n_experts;
      j["intermediate_size"] = c.expert_ffn;
      if (a == ARCH_OLMOE) j["norm_topk_prob"] = r.norm_topk;
      break;
    default:
      j["num_experts"] = c.n_experts;
      j["moe_intermediate_size"] = c.expert_ffn;
      j["intermediate_size"] = c.dense_ffn > 0 ? c.dense_ffn : c.expert_ffn;
      j["norm_topk_prob"] = r.norm_topk;
      j["decoder_sparse_step"] = 1;
      j["mlp_only_layers"] = dense_layer_list(c);
      break;
  }
  if (a == ARCH_QWEN2_MOE) {
    j["shared_expert_intermediate_size"] = c.shared_ffn;
    j["qkv_bias"] = true;
  }
  if (a == ARCH_QWEN3_MOE || a == ARCH_OLMOE) j["attention_bias"] = false;
  if (a == ARCH_MOE_CPP) {
    j["qkv_bias"] = c.qkv_bias;
    j["qk_norm"] = c.qk_norm == QKNORM_HEAD ? "head" : c.qk_norm == QKNORM_FULL ? "full" : "none";
    j["shared_expert_intermediate_size"] = c.shared_ffn;
    j["shared_expert_gate"] = c.shared_gate;
    if (c.mtp_layers > 0) j["num_nextn_predict_layers"] = c.mtp_layers;
    json ro = json::object();
    ro["kind"] = router_kind_name(r.kind);
    ro["score"] = r.score == SCORE_SIGMOID ? "sigmoid" : "softmax";
    ro["topk_then_softmax"] = r.topk_then_softmax;
    ro["norm_topk_prob"] = r.norm_topk;
    ro["correction_bias"] = r.has_correction_bias;
    ro["routed_scaling_factor"] = r.scale;
    if (r.group != GROUP_NONE) {
      ro["n_group"] = r.n_group;
      ro["topk_group"] = r.topk_group;
    }
    j["router"] = ro;
  }
  return j.dump(2) + "\n";
}

}  // namespace moe
