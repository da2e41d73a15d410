#include "train/trainer.h"


#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "train/checkpoint.h"
#include "train/dataset.h"

namespace fs = std::filesystem;

namespace moe {

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
  nlohmann::json dense_layers = nlohmann::json::array();
  if (dense_model)
    for (int i = 0; i < a.layers; ++i) dense_layers.push_back(i);
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
  } else {
    fail("--router '%s' is not one of: softmax_topk, topk_softmax, sigmoid_bias, group_limited, "
         "noisy_topk, expert_choice, hash, random", n.c_str());
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
  if (a.losses.device > 0 && (a.losses.n_devices <= 0 || a.experts % a.losses.n_devices))
    fail("--devices %d must divide --experts %d", a.losses.n_devices, a.experts);
  return c;
}

namespace {

struct LayerStats {
  std::vector<int64_t> load;  // (E) selections over the step
  int64_t kept = 0, assigned = 0;
  double entropy = 0.0;        // summed over tokens
  int64_t tokens = 0;
  float max_logit = -INFINITY;
};

void accumulate_stats(const TrainModel& tm, const TrainActs& acts, std::vector<LayerStats>* st) {
  const ModelConfig& c = tm.cfg;
  for (int l = 0; l < c.n_layers; ++l) {
    if (!c.is_moe[l]) continue;
    const MoeActs& m = acts.layers[l].moe;
    const Routing& r = m.routing;
    LayerStats& s = (*st)[l];
    for (int e = 0; e < c.n_experts; ++e) s.load[e] += r.sel_count[e];
    for (int a = 0; a < r.A; ++a) s.kept += r.kept[a];
    s.assigned += r.A;
    for (int t = 0; t < r.N; ++t) {
      const float* p = r.probs.data() + static_cast<int64_t>(t) * c.n_experts;
      for (int e = 0; e < c.n_experts; ++e)
        if (p[e] > 0) s.entropy -= p[e] * std::log(static_cast<double>(p[e]));
    }
    s.tokens += r.N;
    if (c.router.kind != ROUTER_HASH && c.router.kind != ROUTER_RANDOM)
      for (int64_t i = 0; i < static_cast<int64_t>(r.N) * c.n_experts; ++i)
        s.max_logit = std::max(s.max_logit, m.logits[i]);
  }
}

double eval_loss(TrainModel* tm, TrainActs* acts, const Dataset& d, int windows) {
  const int B = acts->B, T = acts->T;
  double sum = 0.0;
  int64_t n = 0;
  for (int w0 = 0; w0 < windows; w0 += B) {
    for (int b = 0; b < B; ++b) {
      int32_t* ids = acts->ids.data() + b * T;
      int32_t* tg = acts->targets.data() + b * T;
      if (!dataset_val_window(d, w0 + b, windows, T, ids, tg)) std::fill(tg, tg + T, -1);
    }
    StepLosses L = train_forward(tm, acts, 0, false);
    sum += L.ce * L.n_targets;
    n += L.n_targets;
  }
  return n ? sum / n : NAN;
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

}  // namespace

int train_run(const TrainArgs& a, const std::atomic<bool>* stop) {
  if (a.out.empty()) fail("--out is required");
  if (a.steps < 0) fail("--steps must be >= 0");
  if (a.batch <= 0 || a.seq <= 1 || a.accum <= 0) fail("--batch, --seq and --accum must be positive (--seq > 1)");
  ops_set_threads(a.threads);  // 0: keep OpenMP's default; OpenBLAS single-threaded either way
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) fail("%s: cannot create the folder: %s", a.out.c_str(), ec.message().c_str());
  // Data.
  std::string data_dir = a.data;
  if (a.data.empty()) fail("--data is required");
  if (!dataset_is_prepared(a.data)) {
    data_dir = a.out + "/data";
    if (!dataset_is_prepared(data_dir)) {
      PrepareParams pp;
      pp.vocab_size = a.vocab;
      dataset_prepare(a.data, data_dir, pp);
    }
  }
  Dataset data;
  dataset_open(&data, data_dir);
  const std::string tok_path = data_dir + "/tokenizer.json";
  // Model.
  TrainModel tm;
  if (!a.init.empty()) {
    ModelConfig c;
    config_load(&c, a.init);
    train_model_check_trainable(c);
    if (c.vocab != data.vocab)
      fail("%s/config.json: vocab_size %d differs from the data's %d", a.init.c_str(), c.vocab, data.vocab);
    train_model_alloc(&tm, c);
    StArchive ar;
    st_open_dir(&ar, a.init);
    train_model_load_weights(&tm, ar);
  } else {
    train_model_alloc(&tm, train_model_config(a, data.vocab, data.eos_id));
    train_model_init_weights(&tm, a.seed, a.init_std);
  }
  tm.losses = a.losses;
  const ModelConfig& c = tm.cfg;
  AdamW opt;
  adamw_init(&opt, tm, a.adam);
  int64_t step = 0;
  uint64_t seed = a.seed;
  const std::string ckpt = a.out + "/checkpoint";
  const std::string metrics = a.out + "/metrics.jsonl";
  if (a.resume && fs::exists(ckpt + "/trainer_state.json", ec)) {
    step = checkpoint_load(&tm, &opt, ckpt, &seed);
    if (!a.quiet) std::fprintf(stderr, "resumed from %s at step %lld\n", ckpt.c_str(), static_cast<long long>(step));
  } else if (!a.resume) {
    fs::remove(metrics, ec);
  }
  TrainActs acts;
  train_acts_init(&acts, tm, a.batch, a.seq);
  if (!a.quiet) {
    std::fprintf(stderr, "model: %d layers (%d MoE), d %d, %d experts top-%d, %.2fM params; %d x %d tokens x %d accum per step\n",
                 c.n_layers, c.n_moe_layers(), c.hidden, c.n_experts, c.top_k,
                 static_cast<double>(tm.w.n_params) / 1e6, a.batch, a.seq, a.accum);
  }
  std::vector<std::vector<int64_t>> loads(c.n_layers, std::vector<int64_t>(c.n_experts, 0));
  const int64_t tokens_per_step = static_cast<int64_t>(a.batch) * a.seq * a.accum;
  auto t_start = std::chrono::steady_clock::now();
  const int64_t first_step = step;
  double last_val = NAN;
  int exit_code = 0;
  while (step < a.steps) {
    const bool stop_now = (stop && stop->load()) || (a.stop_after > 0 && step - first_step >= a.stop_after);
    if (stop_now) {
      checkpoint_save(tm, opt, step, seed, ckpt, tok_path);
      std::fprintf(stderr, "\ninterrupted: checkpoint saved at step %lld in %s (continue with --resume)\n",
                   static_cast<long long>(step), ckpt.c_str());
      return 130;
    }
    auto t0 = std::chrono::steady_clock::now();
    std::fill(tm.grads.begin(), tm.grads.end(), 0.0f);
    std::vector<LayerStats> stats(c.n_layers);
    for (auto& s : stats) s.load.assign(c.n_experts, 0);
    StepLosses sum;
    for (int micro = 0; micro < a.accum; ++micro) {
      dataset_train_batch(data, seed, step, micro, a.batch, a.seq, acts.ids.data(), acts.targets.data());
      StepLosses L = train_forward(&tm, &acts, seed ^ (static_cast<uint64_t>(step) * 131 + micro), true);
      train_backward(&tm, &acts, 1.0f / a.accum);
      sum.ce += L.ce / a.accum;
      sum.moe.aux += L.moe.aux / a.accum;
      sum.moe.z += L.moe.z / a.accum;
      sum.moe.seq_aux += L.moe.seq_aux / a.accum;
      sum.moe.device += L.moe.device / a.accum;
      accumulate_stats(tm, acts, &stats);
    }
    if (!std::isfinite(sum.total())) {
      std::fprintf(stderr, "\nstep %lld: loss is %s; stopping. The last good checkpoint is %s\n",
                   static_cast<long long>(step), std::isnan(sum.total()) ? "NaN" : "inf",
                   fs::exists(ckpt, ec) ? ckpt.c_str() : "(none yet)");
      return 1;
    }
    const double gnorm = grad_clip(&tm, a.clip);
    const float lr = lr_schedule(step, a.steps, a.warmup, a.lr, a.min_lr_frac);
    adamw_step(&opt, &tm, lr);
    for (int l = 0; l < c.n_layers; ++l) loads[l] = stats[l].load;
    router_bias_update(&tm, loads, a.bias_rate, a.bias_center);
    ++step;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Telemetry.
    nlohmann::ordered_json j;
    j["step"] = step;
    j["loss"] = sum.total();
    j["ce"] = sum.ce;
    j["aux"] = sum.moe.aux;
    j["z"] = sum.moe.z;
    if (a.losses.seq_aux > 0) j["seq_aux"] = sum.moe.seq_aux;
    if (a.losses.device > 0) j["device"] = sum.moe.device;
    j["lr"] = lr;
    j["grad_norm"] = gnorm;
    j["tokens_per_s"] = tokens_per_step / dt;
    nlohmann::ordered_json layers = nlohmann::ordered_json::array();
    double worst = 0.0;
    int worst_layer = -1;
    for (int l = 0; l < c.n_layers; ++l) {
      if (!c.is_moe[l]) continue;
      const LayerStats& s = stats[l];
      double mean = 0.0, var = 0.0, mx = 0.0;
      for (int64_t v : s.load) mean += static_cast<double>(v) / c.n_experts;
      for (int64_t v : s.load) {
        var += (v - mean) * (v - mean) / c.n_experts;
        mx = std::max(mx, static_cast<double>(v));
      }
      const double max_mean = mean > 0 ? mx / mean : 0.0;
      if (max_mean > worst) worst = max_mean, worst_layer = l;
      nlohmann::ordered_json lj;
      lj["layer"] = l;
      lj["load"] = s.load;
      lj["cv"] = mean > 0 ? std::sqrt(var) / mean : 0.0;
      lj["max_mean"] = max_mean;
      lj["entropy"] = s.tokens ? s.entropy / s.tokens : 0.0;
      lj["dropped"] = s.assigned ? 1.0 - static_cast<double>(s.kept) / s.assigned : 0.0;
      if (std::isfinite(s.max_logit)) lj["max_logit"] = s.max_logit;
      if (tm.w.layers[l].e_bias)
        lj["bias"] = std::vector<float>(tm.w.layers[l].e_bias, tm.w.layers[l].e_bias + c.n_experts);
      layers.push_back(lj);
    }
    j["layers"] = layers;
    const bool do_eval = (a.eval_every > 0 && step % a.eval_every == 0) || step == a.steps;
    if (do_eval) {
      last_val = eval_loss(&tm, &acts, data, a.eval_windows);
      j["val_loss"] = last_val;
    }
    append_line(metrics, j.dump());
    if (!a.quiet) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      const double eta = el / static_cast<double>(step - first_step) * static_cast<double>(a.steps - step);
      std::fprintf(stderr, "\rstep %lld/%d | loss %.4f | %.0f tok/s | ETA %s | worst max/mean %.2f%s%s",
                   static_cast<long long>(step), a.steps, sum.total(), tokens_per_step / dt,
                   fmt_eta(eta).c_str(), worst,
                   worst_layer >= 0 ? strfmt(" (layer %d)", worst_layer).c_str() : "",
                   do_eval ? strfmt(" | val %.4f\n", last_val).c_str() : "   ");
      std::fflush(stderr);
    }
    if (a.snapshot_every > 0 && step % a.snapshot_every == 0 && step < a.steps)
      export_model(tm, a.out + strfmt("/snapshots/step-%lld", static_cast<long long>(step)), tok_path);
    if (a.save_every > 0 && step % a.save_every == 0 && step < a.steps)
      checkpoint_save(tm, opt, step, seed, ckpt, tok_path);
  }
  if (step > first_step || !fs::exists(ckpt, ec)) checkpoint_save(tm, opt, step, seed, ckpt, tok_path);
  if (std::isnan(last_val)) last_val = eval_loss(&tm, &acts, data, a.eval_windows);
  export_model(tm, a.out, tok_path);
  nlohmann::ordered_json fin;
  fin["final"] = true;
  fin["step"] = step;
  fin["val_loss"] = last_val;
  append_line(metrics, fin.dump());
  if (!a.quiet) std::fprintf(stderr, "final validation loss %.4f at step %lld; model in %s\n", last_val,
                             static_cast<long long>(step), a.out.c_str());
  return exit_code;
}

}  // namespace moe
