#include "train/trainer.h"


#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "dist/comm.h"
#include "dist/placement.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "text/tokenizer.h"
#include "train/dataset.h"

namespace fs = std::filesystem;

namespace moe {

TrainArgs dense_twin_args(const TrainArgs& a) {
  TrainArgs t = a;
  t.dense_twin = false;
  if (a.experts <= 1) return t;
  const int F = a.expert_ffn > 0 ? a.expert_ffn : 2 * a.d_model;
  const int shared = a.shared_experts > 0 ? (a.shared_ffn > 0 ? a.shared_ffn : F) * a.shared_experts : 0;
  t.experts = 1;
  t.top_k = 1;
  t.expert_ffn = F * a.top_k + shared;
  t.shared_experts = t.shared_ffn = 0;
  t.shared_gate = false;
  t.dense_ffn = 0;
  t.router = "softmax_topk";
  t.renorm = false;
  t.route_scale = 1.0f;
  t.n_group = t.topk_group = 1;
  t.route_devices = 0;
  t.losses.device = t.losses.comm = 0.0f;  // balancing losses have no router to act on
  return t;
}

ModelConfig train_model_config(const TrainArgs& a, int vocab, int32_t eos_id) {
  auto pos = [](const char* flag, int v) {
    if (v <= 0) fail("%s must be positive (got %d)", flag, v);
  };
  pos("--layers", a.layers);
  pos("--d-model", a.d_model);
  pos("--heads", a.heads);
  pos("--experts", a.experts);
  pos("--top-k", a.top_k);
  // --experts 1 is a dense model: --top-k means nothing there and is ignored.
  const int top_k = a.experts == 1 ? 1 : a.top_k;
  if (top_k > a.experts) fail("--top-k %d exceeds --experts %d", top_k, a.experts);
  if (a.shared_experts < 0) fail("--shared-experts must be >= 0");
  const int kv = a.kv_heads > 0 ? a.kv_heads : a.heads;
  if (a.heads % kv) fail("--kv-heads %d must divide --heads %d", kv, a.heads);
  const int hd = a.head_dim > 0 ? a.head_dim : a.d_model / a.heads;
  if (a.head_dim <= 0 && a.d_model % a.heads) fail("--d-model %d is not a multiple of --heads %d", a.d_model, a.heads);
  if (hd % 2) fail("head dim %d must be even for rotary embeddings", hd);
  const int F = a.expert_ffn > 0 ? a.expert_ffn : 2 * a.d_model;
  const int shared = a.shared_experts > 0 ? (a.shared_ffn > 0 ? a.shared_ffn : F) * a.shared_experts : 0;
  const bool dense_model = a.experts == 1;
  if (dense_model && a.shared_experts) fail("--shared-experts needs --experts > 1");
  const int dense_ffn = a.dense_ffn > 0 ? a.dense_ffn : dense_model ? F : F * top_k + shared;
  if (a.moe_every <= 0) fail("--moe-every must be positive");
  nlohmann::ordered_json j;
  j["model_type"] = "moe_cpp";
  j["vocab_size"] = vocab;
  j["hidden_size"] = a.d_model;
  j["num_hidden_layers"] = a.layers;
  j["num_attention_heads"] = a.heads;
  j["num_key_value_heads"] = kv;
  j["head_dim"] = hd;
  j["intermediate_size"] = dense_ffn;
  j["moe_intermediate_size"] = F;
  j["num_experts"] = a.experts;
  j["num_experts_per_tok"] = top_k;
  j["decoder_sparse_step"] = a.moe_every;
  j["first_k_dense_replace"] = a.first_dense;
  if (a.mtp < 0 || a.mtp > 16) fail("--mtp %d must be between 0 and 16", a.mtp);
  if (a.mtp > 0) j["num_nextn_predict_layers"] = a.mtp;  // blocks of the layers' kind
  nlohmann::json dense_layers = nlohmann::json::array();
  if (dense_model)
    for (int i = 0; i < a.layers + a.mtp; ++i) dense_layers.push_back(i);
  j["mlp_only_layers"] = dense_layers;
  j["rms_norm_eps"] = 1e-6;
  j["max_position_embeddings"] = std::max(4096, a.seq);
  j["rope_theta"] = 10000.0;
  j["tie_word_embeddings"] = a.tie_embeddings;
  j["qk_norm"] = a.qk_norm;
  j["qkv_bias"] = false;
  j["shared_expert_intermediate_size"] = shared;
  j["shared_expert_gate"] = a.shared_gate;
  j["bos_token_id"] = eos_id;
  j["eos_token_id"] = eos_id;
  nlohmann::ordered_json r;
  const std::string& n = a.router;
  if (n == "softmax_topk" || n == "softmax" || n == "group_limited") {
    r["kind"] = "token_choice";
    r["norm_topk_prob"] = a.renorm;
  } else if (n == "topk_softmax") {
    r["kind"] = "token_choice";
    r["topk_then_softmax"] = true;
  } else if (n == "sigmoid_bias") {
    r["kind"] = "token_choice";
    r["score"] = "sigmoid";
    r["correction_bias"] = true;
    r["norm_topk_prob"] = true;
  } else if (n == "noisy_topk" || n == "expert_choice" || n == "hash" || n == "random") {
    r["kind"] = n;
  } else if (n == "base" || n == "sinkhorn" || n == "reinforce") {
    if (n == "base" && top_k != 1)
      fail("--router base assigns each token one expert: it needs --top-k 1 (got %d)", top_k);
    r["kind"] = n;
    if (n != "base") r["norm_topk_prob"] = a.renorm;
  } else {
    fail("--router '%s' is not one of: softmax_topk, topk_softmax, sigmoid_bias, group_limited, "
         "noisy_topk, expert_choice, hash, random, base, sinkhorn, reinforce", n.c_str());
  }
  r["routed_scaling_factor"] = a.route_scale;
  if (n == "group_limited" && a.n_group <= 1) fail("--router group_limited needs --n-group > 1");
  if (a.n_group > 1) {
    if (n != "softmax_topk" && n != "softmax" && n != "group_limited" && n != "sigmoid_bias")
      fail("--n-group applies to softmax_topk, group_limited and sigmoid_bias routers");
    r["n_group"] = a.n_group;
    r["topk_group"] = a.topk_group;
  }
  j["router"] = r;
  ModelConfig c;
  config_parse(&c, j.dump(), "training flags");
  if (c.router.group != GROUP_NONE && c.router.score == SCORE_SOFTMAX) c.router.group = GROUP_MAX;
  // hash and random routers have no logits: the balancing losses do not apply to them.
  if ((a.losses.device > 0 || a.losses.comm > 0) &&
      (a.losses.n_devices <= 0 || a.experts % a.losses.n_devices))
    fail("--devices %d must divide --experts %d", a.losses.n_devices, a.experts);
  return c;
}

namespace {

struct LayerStats {
  std::vector<int64_t> load;  // (E) selections over the step
  std::vector<int64_t> kept_load;  // (E) assignments kept after capacity dropping
  int64_t kept = 0, assigned = 0;
  double entropy = 0.0;        // summed over tokens
  int64_t tokens = 0;
  float max_logit = -INFINITY;
  int64_t assign_work = 0;  // BASE auction bids / Sinkhorn iterations, summed over the step
  // Expert parallelism (P ranks): rows each rank's experts ran, and rows each rank sent to other
  // ranks' experts and received from other ranks (one direction of the all-to-all).
  std::vector<int64_t> rank_rows, rank_sent, rank_recv;  // (P)
  // The same traffic if each token went once to each other rank its experts are on (a
  // deduplicating dispatch, which device-limited routing bounds by M): distinct (token, rank).
  std::vector<int64_t> rank_sent_tokens;  // (P)
  std::vector<int64_t> rank_end;          // (P) scratch: one past each rank's last token
  std::vector<char> rank_seen;            // (P) scratch: ranks a token was sent to
};

// The all-to-all traffic of one expert-parallel layer call, from the routing every rank shares:
// the kept assignment of token t (held by the rank whose share contains t) goes to the rank of
// its expert in the token's expert-parallel group (consecutive blocks of K ranks).
void accumulate_rank_stats(const MoeActs& m, int E, LayerStats* s) {
  const int P = static_cast<int>(m.ep_tokens.size());
  if (P <= 1 || !m.ep) return;
  const int K = m.ep->size();
  auto rank_of = [&](int e, int src) { return src / K * K + ep_rank_of(e, E, K); };
  const Routing& r = m.routing;
  std::vector<int64_t>& end = s->rank_end;
  int64_t t = 0;
  for (int q = 0; q < P; ++q) end[q] = t += m.ep_tokens[q];
  for (int a = 0; a < r.A; ++a) {
    if (!r.kept[a]) continue;
    const int src = static_cast<int>(std::upper_bound(end.begin(), end.end(), r.tok[a]) - end.begin());
    const int dst = rank_of(r.expert[a], src);
    ++s->rank_rows[dst];
    if (src != dst) ++s->rank_sent[src], ++s->rank_recv[dst];
  }
  const DispatchPlan& p = m.plan;  // every routed token's assignments, grouped by token
  std::vector<char>& seen = s->rank_seen;
  for (int tok = 0, src = 0; tok < p.N; ++tok) {
    while (tok >= end[src]) ++src;
    std::fill(seen.begin(), seen.end(), 0);
    for (int j = p.tok_off[tok]; j < p.tok_off[tok + 1]; ++j) {
      const int a = p.tok_asg[j];
      const int dst = rank_of(r.expert[a], src);
      if (r.kept[a] && dst != src && !seen[dst]) seen[dst] = 1, ++s->rank_sent_tokens[src];
    }
  }
}

// Every MoE block of the step: the main layers, then the MTP modules' blocks (layers L.. of the
// DeepSeek-V3 layout) when the forward ran them.
void accumulate_stats(const TrainModel& tm, const TrainActs& acts, std::vector<LayerStats>* st) {
  const ModelConfig& c = tm.cfg;
  for (int l = 0; l < c.n_layers + (acts.mtp_done ? c.mtp_layers : 0); ++l) {
    if (!c.is_moe[l]) continue;
    const MoeActs& m = acts.layers[l].moe;
    const Routing& r = m.routing;
    LayerStats& s = (*st)[l];
    for (int e = 0; e < c.n_experts; ++e) {
      s.load[e] += r.sel_count[e];
      s.kept_load[e] += r.kept_count[e];
    }
    for (int a = 0; a < r.A; ++a) s.kept += r.kept[a];
    s.assigned += r.A;
    for (int t = 0; t < r.N; ++t) {
      const float* p = r.probs.data() + static_cast<int64_t>(t) * c.n_experts;
      for (int e = 0; e < c.n_experts; ++e)
        if (p[e] > 0) s.entropy -= p[e] * std::log(static_cast<double>(p[e]));
    }
    s.tokens += r.N;
    s.assign_work += r.assign_work;
    accumulate_rank_stats(m, c.n_experts, &s);
    if (c.router.kind != ROUTER_HASH && c.router.kind != ROUTER_RANDOM)
      for (int64_t i = 0; i < static_cast<int64_t>(r.N) * c.n_experts; ++i)
        s.max_logit = std::max(s.max_logit, m.logits[i]);
  }
}

// Mean cross-entropy over the validation windows with the given capacity factor (0 = dropless,
// as inference runs); router noise off. Windows go in batches of B * P, rank r taking rows
// [r B, (r + 1) B) of each (B = acts->B, P = comm's ranks), so that every batch routes as one
// process routing B * P rows would.
double eval_loss(TrainModel* tm, TrainActs* acts, const Dataset& d, int windows,
                 float capacity_factor, Comm& comm) {
  const int B = acts->B, T = acts->T, P = comm.size(), r = comm.rank();
  const float saved = tm->losses.capacity_factor;
  tm->losses.capacity_factor = capacity_factor;
  double sum = 0.0;
  int64_t n = 0;
  for (int w0 = 0; w0 < windows; w0 += B * P) {
    for (int b = 0; b < B; ++b) {
      int32_t* ids = acts->ids.data() + b * T;
      int32_t* tg = acts->targets.data() + b * T;
      if (dataset_val_window(d, w0 + r * B + b, windows, T, ids, tg)) continue;
      // Past the last window: not scored; its tokens (a copy of the batch's first window, not
      // whatever the last training batch left) still take part in capacity-limited routing.
      dataset_val_window(d, w0, windows, T, ids, tg);
      std::fill(tg, tg + T, -1);
    }
    StepLosses L = train_forward(tm, acts, 0, false);
    sum += L.ce * L.n_targets;
    n += L.n_targets;
  }
  tm->losses.capacity_factor = saved;
  sum = comm_sum(comm, sum);
  n = comm_sum(comm, n);
  return n ? sum / n : NAN;
}

struct ValLoss {
  double dropless = NAN;  // what `moe eval` reports: inference is dropless
  double capacity = NAN;  // with the training capacity factor (NaN when dropless training)
};

ValLoss validate(TrainModel* tm, TrainActs* acts, const Dataset& d, int windows, Comm& comm) {
  ValLoss v;
  v.dropless = eval_loss(tm, acts, d, windows, 0.0f, comm);
  const float cf = tm->losses.capacity_factor;
  if (cf > 0.0f) v.capacity = eval_loss(tm, acts, d, windows, cf, comm);
  return v;
}

void put_val(nlohmann::ordered_json* j, const ValLoss& v) {
  (*j)["val_loss"] = v.dropless;
  if (!std::isnan(v.capacity)) (*j)["val_loss_capacity"] = v.capacity;
}

std::string fmt_val(const ValLoss& v) {
  return std::isnan(v.capacity) ? strfmt("%.4f", v.dropless)
                                : strfmt("%.4f (with drops %.4f)", v.dropless, v.capacity);
}

std::string fmt_eta(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int t = static_cast<int>(s + 0.5);
  return t >= 3600 ? strfmt("%dh%02dm", t / 3600, t / 60 % 60) : strfmt("%dm%02ds", t / 60, t % 60);
}

void append_line(const std::string& path, const std::string& line) {
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) fail("%s: cannot open for appending", path.c_str());
  std::fputs(line.c_str(), f);
  std::fputc('\n', f);
  if (std::fclose(f) != 0) fail("%s: write failed", path.c_str());
}

int64_t spec_numel(const TensorSpec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n;
}

// Everything one run holds between its phases.
struct Run {
  const TrainArgs* a = nullptr;
  ParamGroups groups;  // --freeze, --lr-groups
  ModelConfig init_cfg;  // the --init checkpoint's configuration
  Dataset data;
  std::string tok_path;  // tokenizer.json copied into checkpoints and the exported model
  std::string ckpt, metrics;
  TrainModel tm;
  AdamW opt;
  TrainActs acts;
  int64_t step = 0, first_step = 0;
  uint64_t seed = 1;
  std::vector<std::vector<int64_t>> loads;  // (L, E) selections of the last step
  std::vector<std::vector<int64_t>> received;  // (L, E) tokens each expert kept in the last step
  std::vector<LayerStats> stats;            // [L] routing statistics of the current step
  ValLoss last_val;
  // Data parallelism under mpirun: every rank of the world trains on its B / P sequences of the
  // global batch (rank r: sequences [r B/P, (r+1) B/P)), with the experts spread over the ranks.
  Comm* world = nullptr;
  int rank = 0, P = 1;
  std::vector<int32_t> gids, gtargets;  // (B, T) the global batch (P > 1)
  // Each rank holds only its own routed experts' weights, gradients and moments (the rest is
  // replicated): ep is the group the experts split over, dp the ranks holding the same experts.
  Comm* ep = nullptr;
  Comm* dp = nullptr;
  ShardRole role;                       // this rank's part in writing checkpoints and the model
  std::vector<int64_t> expert_params;   // (P) routed-expert parameters held by each rank
};

// With --init DIR: DIR's tokenizer.json if it has one, else "".
std::string init_tokenizer(const TrainArgs& a) {
  if (a.init.empty()) return "";
  const std::string p = a.init + "/tokenizer.json";
  return file_exists(p) ? p : "";
}

// A prepared data folder must have been tokenized with the checkpoint's own tokenizer.
void check_same_tokenizer(const std::string& data_dir, const std::string& init_tok) {
  const std::string dt = data_dir + "/tokenizer.json";
  if (!file_exists(dt) || read_text_file(dt) != read_text_file(init_tok))
    fail("%s: the data was tokenized with another tokenizer than %s (remove the folder to "
         "re-tokenize, or pass the raw corpus as --data)", dt.c_str(), init_tok.c_str());
}

// The --init checkpoint's vocabulary against the data's: a config vocab_size larger than the
// tokenizer's is normal (padded embeddings, e.g. Qwen3's 151,936 for 151,669 tokens).
void check_init_vocab(const TrainArgs& a, const ModelConfig& c, const Dataset& d) {
  const std::string cfg = a.init + "/config.json";
  if (!init_tokenizer(a).empty()) {
    if (c.vocab < d.vocab)
      fail("%s: vocab_size %d is smaller than the %d tokens of %s/tokenizer.json", cfg.c_str(),
           c.vocab, d.vocab, a.init.c_str());
    return;
  }
  if (c.vocab != d.vocab)
    fail("%s: vocab_size %d differs from the data's %d, and %s has no tokenizer.json to "
         "tokenize the data with (copy the checkpoint's tokenizer.json there)", cfg.c_str(),
         c.vocab, d.vocab, a.init.c_str());
}

// Phase 1: the output folder and the tokenized data (prepared into OUT/data when needed, with
// the --init checkpoint's tokenizer.json when it has one, else with a newly trained BPE).
void open_data(Run* r) {
  const TrainArgs& a = *r->a;
  if (a.out.empty()) fail("--out is required");
  if (a.steps < 0) fail("--steps must be >= 0");
  if (a.batch <= 0 || a.seq <= 1 || a.accum <= 0)
    fail("--batch, --seq and --accum must be positive (--seq > 1)");
  param_groups_parse(&r->groups, a.freeze, a.lr_groups);
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) fail("%s: cannot create the folder: %s", a.out.c_str(), ec.message().c_str());
  if (a.data.empty()) fail("--data is required");
  if (!a.init.empty()) {
    config_load(&r->init_cfg, a.init);
    StArchive ar;  // a quantized checkpoint is refused before any data is prepared
    st_open_dir(&ar, a.init);
    train_model_check_weights(ar);
  }
  const std::string init_tok = init_tokenizer(a);
  if (!init_tok.empty()) {  // refuse a too-small config before tokenizing anything
    Tokenizer tok;
    tokenizer_load(&tok, init_tok);
    Dataset probe;
    probe.vocab = tokenizer_vocab_size(tok);
    check_init_vocab(a, r->init_cfg, probe);
  }
  std::string data_dir = a.data;
  if (!dataset_is_prepared(a.data)) {
    data_dir = a.out + "/data";
    if (r->rank == 0 && !dataset_is_prepared(data_dir)) {  // the others wait for rank 0's
      PrepareParams pp;
      pp.vocab_size = a.vocab;
      pp.tokenizer = init_tok;
      if (!init_tok.empty() && !r->init_cfg.eos_ids.empty()) pp.eos_id = r->init_cfg.eos_ids[0];
      dataset_prepare(a.data, data_dir, pp);
    }
    r->world->barrier();
  }
  if (!init_tok.empty()) check_same_tokenizer(data_dir, init_tok);
  dataset_open(&r->data, data_dir);
  r->tok_path = data_dir + "/tokenizer.json";
}

// Phase 2: the model, from --init or freshly initialised, and its optimizer.
void build_model(Run* r) {
  const TrainArgs& a = *r->a;
  TrainModel& tm = r->tm;
  const ModelConfig cfg = a.init.empty() ? train_model_config(a, r->data.vocab, r->data.eos_id)
                                         : r->init_cfg;
  // This rank's block of experts under expert parallelism (all of them in one process).
  const int E = cfg.n_experts, K = r->ep->size(), q = r->ep->rank();
  const int e0 = K > 1 ? ep_expert_begin(E, K, q) : 0, e1 = K > 1 ? ep_expert_begin(E, K, q + 1) : -1;
  if (!a.init.empty()) {
    check_init_vocab(a, r->init_cfg, r->data);
    train_model_alloc(&tm, cfg, false, e0, e1);
    StArchive ar;
    st_open_dir(&ar, a.init);
    train_model_load_weights(&tm, ar);
  } else {
    train_model_alloc(&tm, cfg, false, e0, e1);
    train_model_init_weights(&tm, a.seed, a.init_std);
  }
  tm.losses = a.losses;
  tm.rl_decay = a.rl_decay;
  if (a.mtp > 0 && a.mtp != tm.cfg.mtp_layers)
    fail("--mtp %d: the --init checkpoint has %d MTP modules", a.mtp, tm.cfg.mtp_layers);
  tm.mtp_weight = a.mtp_weight;
  param_groups_freeze(&tm, r->groups);
  adamw_init(&r->opt, tm, a.adam, r->groups);
  // Routed-expert parameters held by each rank (about 1/K of the model's each).
  int64_t mine = 0;
  for (size_t i = 0; i < tm.specs.size(); ++i)
    if (tm.held[i] && tm.expert_of[i] >= 0) mine += spec_numel(tm.specs[i]);
  r->expert_params.assign(r->P, mine);
  const std::vector<int64_t> bytes(r->P, sizeof mine);  // (P)
  r->world->allgatherv(&mine, sizeof mine, r->expert_params.data(), bytes.data());
}

// Phase 3: resume from OUT/checkpoint (or start fresh metrics), and allocate the activations.
void resume_or_start(Run* r) {
  const TrainArgs& a = *r->a;
  r->seed = a.seed;
  r->ckpt = a.out + "/checkpoint";
  r->metrics = a.out + "/metrics.jsonl";
  std::error_code ec;
  if (a.resume && fs::exists(r->ckpt + "/trainer_state.json", ec)) {
    r->step = checkpoint_load(&r->tm, &r->opt, r->ckpt, &r->seed);
    if (!a.quiet)
      std::fprintf(stderr, "resumed from %s at step %lld\n", r->ckpt.c_str(),
                   static_cast<long long>(r->step));
  } else if (!a.resume && r->rank == 0) {
    fs::remove(r->metrics, ec);
  }
  r->first_step = r->step;
  train_acts_init(&r->acts, r->tm, a.batch / r->P, a.seq);
  if (r->P > 1) {
    train_acts_enable_ep(&r->acts, r->tm, r->ep, r->world);
    r->gids.assign(static_cast<size_t>(a.batch) * a.seq, 0);
    r->gtargets.assign(static_cast<size_t>(a.batch) * a.seq, -1);
  }
  const ModelConfig& c = r->tm.cfg;
  r->loads.assign(c.n_layers, std::vector<int64_t>(c.n_experts, 0));
  r->received.assign(c.n_layers, std::vector<int64_t>(c.n_experts, 0));
  r->stats.assign(c.n_layers + c.mtp_layers, LayerStats{});  // main layers, then MTP blocks
  for (LayerStats& s : r->stats) {
    s.load.assign(c.n_experts, 0);
    s.kept_load.assign(c.n_experts, 0);
    for (auto* v : {&s.rank_rows, &s.rank_sent, &s.rank_recv, &s.rank_sent_tokens, &s.rank_end})
      v->assign(r->P, 0);
    s.rank_seen.assign(r->P, 0);
  }
  if (!a.quiet && r->rank == 0) {
    std::fprintf(stderr,
                 "model: %d layers (%d MoE), d %d, %d experts top-%d, %.2fM params; %d x %d tokens "
                 "x %d accum per step\n",
                 c.n_layers, c.n_moe_layers(), c.hidden, c.n_experts, c.top_k,
                 static_cast<double>(r->tm.w.n_params) / 1e6, a.batch, a.seq, a.accum);
    if (r->P > 1)
      std::fprintf(stderr, "expert parallel over %d processes: %d sequences and %d-%d experts "
                   "per rank (%.2fM expert parameters held by rank 0)\n", r->P, a.batch / r->P,
                   c.n_experts / r->ep->size(), (c.n_experts + r->ep->size() - 1) / r->ep->size(),
                   static_cast<double>(r->expert_params[0]) / 1e6);
    if (!a.freeze.empty()) {
      int64_t frozen = 0;
      for (size_t i = 0; i < r->tm.specs.size(); ++i)
        if (!r->tm.trainable[i]) frozen += spec_numel(r->tm.specs[i]);
      std::fprintf(stderr, "frozen: %s (%.2fM params)\n", a.freeze.c_str(),
                   static_cast<double>(frozen) / 1e6);
    }
  }
}

// Forward and backward of every micro-batch of the step; gradients accumulate in tm.grads.
StepLosses accumulate_step(Run* r, std::vector<LayerStats>* stats) {
  const TrainArgs& a = *r->a;
  std::fill(r->tm.grads.begin(), r->tm.grads.end(), 0.0f);
  for (LayerStats& s : *stats) {  // reset in place: allocated once in resume_or_start
    std::fill(s.load.begin(), s.load.end(), 0);
    std::fill(s.kept_load.begin(), s.kept_load.end(), 0);
    s.kept = s.assigned = s.tokens = s.assign_work = 0;
    s.entropy = 0.0;
    s.max_logit = -INFINITY;
    for (auto* v : {&s.rank_rows, &s.rank_sent, &s.rank_recv, &s.rank_sent_tokens})
      std::fill(v->begin(), v->end(), 0);
  }
  StepLosses sum;
  for (int micro = 0; micro < a.accum; ++micro) {
    if (r->P == 1) {
      dataset_train_batch(r->data, r->seed, r->step, micro, a.batch, a.seq, r->acts.ids.data(),
                          r->acts.targets.data());
    } else {  // this rank's sequences of the global batch
      dataset_train_batch(r->data, r->seed, r->step, micro, a.batch, a.seq, r->gids.data(),
                          r->gtargets.data());
      const int64_t n = static_cast<int64_t>(r->acts.B) * a.seq, o = r->rank * n;
      std::copy(r->gids.begin() + o, r->gids.begin() + o + n, r->acts.ids.begin());
      std::copy(r->gtargets.begin() + o, r->gtargets.begin() + o + n, r->acts.targets.begin());
    }
    const uint64_t fseed = r->seed ^ (static_cast<uint64_t>(r->step) * 131 + micro);
    StepLosses L = train_forward(&r->tm, &r->acts, fseed, true);
    // The batch's mean cross-entropy, of which this rank's targets are a share.
    double ce = L.ce;
    float ce_scale = 1.0f;
    if (r->P > 1) {
      const int64_t n_all = comm_sum(*r->world, static_cast<int64_t>(L.n_targets));
      ce = n_all ? comm_sum(*r->world, L.ce * L.n_targets) / n_all : 0.0;
      ce_scale = n_all ? static_cast<float>(static_cast<double>(L.n_targets) / n_all) : 0.0f;
    }
    train_backward(&r->tm, &r->acts, 1.0f / a.accum, ce_scale);
    sum.ce += ce / a.accum;
    sum.moe.aux += L.moe.aux / a.accum;
    sum.moe.z += L.moe.z / a.accum;
    sum.moe.seq_aux += L.moe.seq_aux / a.accum;
    sum.moe.device += L.moe.device / a.accum;
    sum.moe.comm += L.moe.comm / a.accum;
    sum.mtp.resize(L.mtp.size(), 0.0);
    for (size_t k = 0; k < L.mtp.size(); ++k) sum.mtp[k] += L.mtp[k] / a.accum;
    sum.mtp_weight = L.mtp_weight;
    accumulate_stats(r->tm, r->acts, stats);
  }
  // Replicated parameters saw only this rank's tokens: their gradients are summed over every
  // rank. A held expert saw every row routed to it from its expert-parallel group, so its
  // gradient is complete there; with several groups, the groups' gradients are summed.
  if (r->P > 1) {
    std::vector<float>& g = r->tm.grads;
    const int64_t ns = r->tm.n_shared, ne = static_cast<int64_t>(g.size()) - ns;
    r->world->allreduce(g.data(), ns, ReduceType::F32, ReduceOp::SUM);
    if (r->dp->size() > 1 && ne > 0)
      r->dp->allreduce(g.data() + ns, ne, ReduceType::F32, ReduceOp::SUM);
  }
  return sum;
}

// Per-layer routing telemetry of one step; *worst / *worst_layer: the highest max/mean load.
nlohmann::ordered_json layer_metrics(const TrainModel& tm, const std::vector<LayerStats>& stats,
                                     double* worst, int* worst_layer) {
  const ModelConfig& c = tm.cfg;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  *worst = 0.0;
  *worst_layer = -1;
  for (int l = 0; l < c.n_layers + c.mtp_layers; ++l) {
    if (!c.is_moe[l]) continue;
    const LayerStats& s = stats[l];
    if (l >= c.n_layers && s.tokens == 0) continue;  // the MTP modules did not run
    double mean = 0.0, var = 0.0, mx = 0.0;
    for (int64_t v : s.load) mean += static_cast<double>(v) / c.n_experts;
    for (int64_t v : s.load) {
      var += (v - mean) * (v - mean) / c.n_experts;
      mx = std::max(mx, static_cast<double>(v));
    }
    const double max_mean = mean > 0 ? mx / mean : 0.0;
    if (max_mean > *worst) *worst = max_mean, *worst_layer = l;
    nlohmann::ordered_json lj;
    lj["layer"] = l;
    if (l >= c.n_layers) lj["mtp"] = l - c.n_layers + 1;  // MTP module k's block (depth k)
    lj["load"] = s.load;
    lj["cv"] = mean > 0 ? std::sqrt(var) / mean : 0.0;
    lj["max_mean"] = max_mean;
    lj["entropy"] = s.tokens ? s.entropy / s.tokens : 0.0;
    lj["dropped"] = s.assigned ? 1.0 - static_cast<double>(s.kept) / s.assigned : 0.0;
    if (std::isfinite(s.max_logit)) lj["max_logit"] = s.max_logit;
    if (c.router.kind == ROUTER_BASE) lj["auction_bids"] = s.assign_work;
    if (c.router.kind == ROUTER_SINKHORN) lj["sinkhorn_iters"] = s.assign_work;
    if (s.rank_rows.size() > 1) {
      double rmean = 0.0, rmax = 0.0;
      for (int64_t v : s.rank_rows) {
        rmean += static_cast<double>(v) / s.rank_rows.size();
        rmax = std::max(rmax, static_cast<double>(v));
      }
      lj["ranks"] = {{"rows", s.rank_rows}, {"sent", s.rank_sent}, {"received", s.rank_recv},
                     {"sent_tokens", s.rank_sent_tokens},
                     {"max_mean", rmean > 0 ? rmax / rmean : 0.0}};
    }
    if (tm.w.layers[l].e_bias)
      lj["bias"] = std::vector<float>(tm.w.layers[l].e_bias, tm.w.layers[l].e_bias + c.n_experts);
    layers.push_back(lj);
  }
  return layers;
}

struct StepReport {
  StepLosses loss;
  double gnorm = 0.0, seconds = 0.0;
  float lr = 0.0f;
  bool evaluated = false;
};

// Telemetry of one finished step: a metrics.jsonl line and the progress line.
void report_step(Run* r, const StepReport& s, const std::vector<LayerStats>& stats,
                 std::chrono::steady_clock::time_point t_start) {
  const TrainArgs& a = *r->a;
  if (r->rank != 0) return;  // rank 0 reports for every rank
  const int64_t tokens_per_step = static_cast<int64_t>(a.batch) * a.seq * a.accum;
  nlohmann::ordered_json j;
  j["step"] = r->step;
  j["loss"] = s.loss.total();
  j["ce"] = s.loss.ce;
  j["aux"] = s.loss.moe.aux;
  j["z"] = s.loss.moe.z;
  if (a.losses.seq_aux > 0) j["seq_aux"] = s.loss.moe.seq_aux;
  if (a.losses.device > 0) j["device"] = s.loss.moe.device;
  if (r->tm.cfg.router.kind == ROUTER_REINFORCE && std::isfinite(r->tm.rl_baseline))
    j["rl_baseline"] = r->tm.rl_baseline;
  if (a.losses.comm > 0) j["comm"] = s.loss.moe.comm;
  if (!s.loss.mtp.empty()) j["mtp"] = s.loss.mtp;  // each depth's cross-entropy (t+2, t+3, ...)
  j["lr"] = s.lr;
  j["grad_norm"] = s.gnorm;
  j["tokens_per_s"] = tokens_per_step / s.seconds;
  double worst = 0.0;
  int worst_layer = -1;
  j["layers"] = layer_metrics(r->tm, stats, &worst, &worst_layer);
  if (r->P > 1) {  // rows that crossed ranks, both ways (dispatch and combine) of the forward
    int64_t rows = 0, toks = 0;
    for (const LayerStats& ls : stats) {
      for (int64_t v : ls.rank_sent) rows += v;
      for (int64_t v : ls.rank_sent_tokens) toks += v;
    }
    const double per = 2.0 * r->tm.cfg.hidden * sizeof(float) / static_cast<double>(tokens_per_step);
    j["a2a_bytes_per_token"] = per * static_cast<double>(rows);
    j["a2a_bytes_per_token_dedup"] = per * static_cast<double>(toks);
    j["expert_params_per_rank"] = r->expert_params;
  }
  if (s.evaluated) put_val(&j, r->last_val);
  append_line(r->metrics, j.dump());
  if (a.quiet) return;
  const double el =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const double eta = el / static_cast<double>(r->step - r->first_step) *
                     static_cast<double>(a.steps - r->step);
  std::fprintf(stderr, "\rstep %lld/%d | loss %.4f | %.0f tok/s | ETA %s | worst max/mean %.2f%s%s",
               static_cast<long long>(r->step), a.steps, s.loss.total(),
               tokens_per_step / s.seconds, fmt_eta(eta).c_str(), worst,
               worst_layer >= 0 ? strfmt(" (layer %d)", worst_layer).c_str() : "",
               s.evaluated ? strfmt(" | val %s\n", fmt_val(r->last_val).c_str()).c_str() : "   ");
  std::fflush(stderr);
}

// The checkpoint: every rank writes its experts' shard (rank 0 also the replicated tensors).
void save(Run* r) {
  checkpoint_save(r->tm, r->opt, r->step, r->seed, r->ckpt, r->tok_path, r->role);
}

// One optimizer step with its telemetry, validation, snapshot and checkpoint. Returns false (and
// sets *exit_code) when training must stop.
bool train_step(Run* r, std::chrono::steady_clock::time_point t_start, int* exit_code) {
  const TrainArgs& a = *r->a;
  TrainModel& tm = r->tm;
  const ModelConfig& c = tm.cfg;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<LayerStats>& stats = r->stats;
  StepReport s;
  s.loss = accumulate_step(r, &stats);
  if (!std::isfinite(s.loss.total())) {
    std::error_code ec;
    std::fprintf(stderr, "\nstep %lld: loss is %s; stopping. The last good checkpoint is %s\n",
                 static_cast<long long>(r->step), std::isnan(s.loss.total()) ? "NaN" : "inf",
                 fs::exists(r->ckpt, ec) ? r->ckpt.c_str() : "(none yet)");
    *exit_code = 1;
    return false;
  }
  s.gnorm = grad_clip(&tm, a.clip, r->P > 1 ? r->ep : nullptr);
  s.lr = lr_schedule(r->step, a.steps, a.warmup, a.lr, a.min_lr_frac);
  for (int l = 0; l < c.n_layers; ++l) {
    r->loads[l] = stats[l].load;
    r->received[l] = stats[l].kept_load;
  }
  adamw_step(&r->opt, &tm, s.lr, &r->received);  // idle experts are skipped (optim.h)
  // A frozen router keeps its correction bias too (it moves by this rule, not by gradients).
  if (!r->groups.frozen[PG_ROUTER]) router_bias_update(&tm, r->loads, a.bias_rate, a.bias_center);
  ++r->step;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.evaluated = (a.eval_every > 0 && r->step % a.eval_every == 0) || r->step == a.steps;
  if (s.evaluated) r->last_val = validate(&tm, &r->acts, r->data, a.eval_windows, *r->world);
  report_step(r, s, stats, t_start);
  const long long st = static_cast<long long>(r->step);
  // Every rank writes its experts' shard of the model (rank 0 also the replicated tensors).
  if (a.snapshot_every > 0 && r->step % a.snapshot_every == 0 && r->step < a.steps)
    export_model(tm, a.out + strfmt("/snapshots/step-%lld", st), r->tok_path, r->role);
  if (a.save_every > 0 && r->step % a.save_every == 0 && r->step < a.steps) save(r);
  return true;
}

// Last phase: the final checkpoint, validation and exported model.
void finish(Run* r) {
  const TrainArgs& a = *r->a;
  std::error_code ec;
  if (r->step > r->first_step || !fs::exists(r->ckpt, ec)) save(r);
  if (std::isnan(r->last_val.dropless))
    r->last_val = validate(&r->tm, &r->acts, r->data, a.eval_windows, *r->world);
  export_model(r->tm, a.out, r->tok_path, r->role);
  if (r->rank != 0) return;
  nlohmann::ordered_json fin;
  fin["final"] = true;
  fin["step"] = r->step;
  put_val(&fin, r->last_val);
  append_line(r->metrics, fin.dump());
  if (!a.quiet)
    std::fprintf(stderr, "final validation loss %s at step %lld; model in %s\n",
                 fmt_val(r->last_val).c_str(), static_cast<long long>(r->step), a.out.c_str());
}

}  // namespace

namespace {

// The flags as they apply to this run: under mpirun the P ranks of an expert-parallel group
// are the devices of the device-level loss and of device-limited routing (one routing group per
// rank).
TrainArgs devices_resolved(const TrainArgs& in, int P) {
  TrainArgs a = in;
  if (P > 1) {
    if (a.losses.device > 0 || a.losses.comm > 0 || a.route_devices > 0) {
      if (a.losses.n_devices != 1 && a.losses.n_devices != P)
        fail("--devices %d: under mpirun the devices are the %d ranks of an expert-parallel "
             "group", a.losses.n_devices, P);
      a.losses.n_devices = P;
    }
  }
  if (a.route_devices > 0) {
    const int n = a.losses.n_devices;
    if (a.n_group > 1) fail("--route-devices and --n-group both choose routing groups; give one");
    if (n <= 1 || a.experts % n)
      fail("--route-devices needs devices that split the %d experts evenly (--devices, or the "
           "processes under mpirun; got %d)", a.experts, n);
    if (a.route_devices > n)
      fail("--route-devices %d exceeds the %d devices", a.route_devices, n);
    a.n_group = n;
    a.topk_group = a.route_devices;
    a.losses.comm_devices = a.route_devices;  // M of the communication loss
  }
  return a;
}

// softmax top-1 without renormalisation: the gate is the token's softmax probability, about 1/E
// while the router is near uniform (docs/training.md).
void warn_damped_top1(const ModelConfig& c) {
  const RouterSpec& r = c.router;
  if (c.n_experts <= 1 || c.top_k != 1 || r.kind != ROUTER_TOKEN_CHOICE ||
      r.score != SCORE_SOFTMAX || r.topk_then_softmax || r.norm_topk || r.scale >= 0.5f * c.n_experts)
    return;
  std::fprintf(stderr,
               "warning: softmax_topk with --top-k 1 and no renormalisation: each token's expert "
               "output is multiplied by its router probability, about 1/%d = %.3f while the "
               "router is near uniform, which damps the MoE layers; consider --route-scale %d, "
               "--top-k 2 --renorm, or topk_softmax (at top-1, --renorm makes the weight 1 and "
               "the router learns from the balancing losses only). See docs/training.md.\n",
               c.n_experts, 1.0 / c.n_experts, c.n_experts);
}

}  // namespace

int train_run(const TrainArgs& a_in, const std::atomic<bool>* stop) {
  if (a_in.ep < 0) fail("--ep must be >= 0 (0: every process in one expert-parallel group)");
  if (a_in.dense_twin && !a_in.init.empty())
    fail("--dense-twin trains the twin from scratch; it cannot start from --init %s",
         a_in.init.c_str());
  comm_set_ep_size(a_in.ep);  // --ep K: groups of K ranks, data parallelism across them
  const TrainArgs a =
      devices_resolved(a_in.dense_twin ? dense_twin_args(a_in) : a_in, comm_ep().size());
  ops_set_threads(a.threads);  // 0: keep OpenMP's default; OpenBLAS single-threaded either way
  Run r;
  r.a = &a;
  r.world = &comm_world();
  r.rank = r.world->rank();
  r.P = r.world->size();
  r.ep = &comm_ep();
  r.dp = &comm_dp();
  r.role = shard_role();
  if (a.batch % r.P != 0)
    fail("--batch %d: the global batch must split evenly over the %d processes", a.batch, r.P);
  if (!(a.rl_decay >= 0.0f && a.rl_decay < 1.0f))
    fail("--rl-baseline-decay must be in [0, 1) (got %g)", a.rl_decay);
  if (!(a.losses.rl_entropy >= 0.0f)) fail("--rl-entropy must be >= 0 (got %g)", a.losses.rl_entropy);
  open_data(&r);
  build_model(&r);
  if (r.rank == 0) warn_damped_top1(r.tm.cfg);
  resume_or_start(&r);
  const auto t_start = std::chrono::steady_clock::now();
  int exit_code = 0;
  while (r.step < a.steps) {
    const bool stop_now = (stop && stop->load()) ||
                          (a.stop_after > 0 && r.step - r.first_step >= a.stop_after);
    if (stop_now) {
      save(&r);
      std::fprintf(stderr,
                   "\ninterrupted: checkpoint saved at step %lld in %s (continue with --resume)\n",
                   static_cast<long long>(r.step), r.ckpt.c_str());
      return 130;
    }
    if (!train_step(&r, t_start, &exit_code)) return exit_code;
  }
  finish(&r);
  return exit_code;
}

}  // namespace moe
