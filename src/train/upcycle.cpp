#include "train/upcycle.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "ops/router.h"
#include "train/checkpoint.h"
#include "train/train_model.h"

namespace moe {

void upcycle(const std::string& dense_dir, const std::string& out_dir, const UpcycleParams& p) {
  ModelConfig dc;
  config_load(&dc, dense_dir);
  if (dc.n_moe_layers() != 0)
    fail("%s/config.json: the model already has MoE layers; --dense needs a dense checkpoint",
         dense_dir.c_str());
  if (dc.qkv_bias && dc.arch != ARCH_MOE_CPP && dc.arch != ARCH_QWEN2_MOE)
    fail("%s/config.json: attention biases are not supported for upcycling here", dense_dir.c_str());
  const int F = dc.dense_ffn, G = p.granularity, S = p.shared;
  if (G <= 0 || F % G) fail("--granularity %d must divide the dense FFN width %d", G, F);
  if (S < 0 || S >= G) fail("--shared %d must be below --granularity %d", S, G);
  if (p.experts <= 0 || p.top_k <= 0 || p.top_k > p.experts)
    fail("--top-k %d must be between 1 and --experts %d", p.top_k, p.experts);
  if (p.experts % (G - S))
    fail("--experts %d must be a multiple of the %d routed slices (granularity - shared)", p.experts, G - S);
  TrainModel dense;
  train_model_alloc(&dense, dc);
  StArchive ar;
  st_open_dir(&ar, dense_dir);
  train_model_load_weights(&dense, ar);

  ModelConfig mc = dc;
  mc.arch = ARCH_MOE_CPP;
  mc.n_experts = p.experts;
  mc.top_k = p.top_k;
  mc.expert_ffn = F / G;
  mc.shared_ffn = S * (F / G);
  mc.shared_gate = false;
  config_drop_mtp(&mc);  // MTP modules are not upcycled: the MoE starts without them
  mc.is_moe.assign(mc.n_layers, 1);
  mc.router = RouterSpec();
  mc.router.norm_topk = p.renorm;
  TrainModel up;
  train_model_alloc(&up, mc);
  // Everything but the FFNs is copied by name.
  for (size_t i = 0; i < up.specs.size(); ++i) {
    const int64_t j = train_model_find(dense, up.specs[i].name);
    if (j < 0) continue;
    int64_t n = 1;
    for (int64_t d : up.specs[i].shape) n *= d;
    std::memcpy(up.params.data() + up.offset[i], dense.params.data() + dense.offset[j], n * 4);
  }
  const int D = mc.hidden, Fs = F / G, K = p.top_k, E = p.experts;
  const double w0 = p.renorm ? 1.0 / K : 1.0 / E;
  const float scale = static_cast<float>((G - S) / (K * w0));
  for (int l = 0; l < mc.n_layers; ++l) {
    const MlpWeights& dm = dense.w.layers[l].mlp;
    const LayerWeights& ul = up.w.layers[l];
    // slice s: gate/up rows s*Fs .. (s+1)*Fs of (F, D); down columns of (D, F).
    auto copy_slice = [&](float* gate, float* upw, float* down, int s0, int ns, int64_t down_ld,
                          float down_scale) {
      std::memcpy(gate, dm.gate.w + static_cast<int64_t>(s0) * Fs * D, sizeof(float) * ns * Fs * D);
      std::memcpy(upw, dm.up.w + static_cast<int64_t>(s0) * Fs * D, sizeof(float) * ns * Fs * D);
      for (int d = 0; d < D; ++d)
        for (int f = 0; f < ns * Fs; ++f)
          down[static_cast<int64_t>(d) * down_ld + f] =
              down_scale * dm.down.w[static_cast<int64_t>(d) * F + s0 * Fs + f];
    };
    if (S > 0)
      copy_slice(const_cast<float*>(ul.shared.gate.w), const_cast<float*>(ul.shared.up.w),
                 const_cast<float*>(ul.shared.down.w), 0, S, S * Fs, 1.0f);
    for (int e = 0; e < E; ++e) {
      const ExpertWeights& ew = ul.experts[e];
      float* g = const_cast<float*>(ew.gate);
      float* u = const_cast<float*>(ew.up);
      float* dn = const_cast<float*>(ew.down);
      copy_slice(g, u, dn, S + e % (G - S), 1, Fs, scale);
      if (p.noise > 0) {
        for (float* w : {g, u, dn}) {
          const int64_t n = static_cast<int64_t>(Fs) * D;
          double ss = 0;
          for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(w[i]) * w[i];
          const float sd = static_cast<float>(std::sqrt(ss / n)) * p.noise;
          const uint64_t key = p.seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(l * E + e) * 3 +
                               static_cast<uint64_t>(w == g ? 0 : w == u ? 1 : 2);
          for (int64_t i = 0; i < n; ++i) w[i] += sd * static_cast<float>(rng_normal(key, i));
        }
      }
    }
    float* router = const_cast<float*>(ul.router.w);
    for (int64_t i = 0; i < static_cast<int64_t>(E) * D; ++i)
      router[i] = p.router_std > 0 ? p.router_std * static_cast<float>(rng_normal(p.seed + 77 + l, i)) : 0.0f;
  }
  const std::string tok = dense_dir + "/tokenizer.json";
  export_model(up, out_dir, file_exists(tok) ? tok : "");
}

}  // namespace moe
