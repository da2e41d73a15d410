#include "train/train_mtp.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/backend.h"

namespace moe {

namespace {

float* wr(const float* p) { return const_cast<float*>(p); }  // gradient views are writable

// Copies the D columns at col of src (N, 2D) into dst (N, D), or back (to_cat).
void cat_columns(float* cat, float* x, int64_t N, int64_t D, int64_t col, bool to_cat) {
  for (int64_t t = 0; t < N; ++t) {
    float* c = cat + t * 2 * D + col;
    float* r = x + t * D;
    if (to_cat) std::memcpy(c, r, sizeof(float) * D);
    else std::memcpy(r, c, sizeof(float) * D);
  }
}

// Module k's input tokens and targets from the batch's (see train_mtp.h).
void mtp_tokens(TrainActs* a, int k) {
  MtpActs& x = a->mtp[k];
  const int T = a->T;
  for (int b = 0; b < a->B; ++b)
    for (int i = 0; i < T; ++i) {
      const int64_t t = static_cast<int64_t>(b) * T + i, src = i + k + 1;
      const bool in = src < T;
      x.ids[t] = a->ids[b * static_cast<int64_t>(T) + (in ? src : T - 1)];
      x.targets[t] = in ? a->targets[b * static_cast<int64_t>(T) + src] : -1;
    }
}

}  // namespace

void mtp_acts_init(TrainActs* a, const TrainModel& tm) {
  const ModelConfig& c = tm.cfg;
  a->mtp.assign(c.mtp_layers, MtpActs());
  if (c.mtp_layers == 0) return;
  const int64_t N = static_cast<int64_t>(a->B) * a->T, D = c.hidden, V = c.vocab;
  for (MtpActs& x : a->mtp) {
    x.ids.assign(N, 0);
    x.targets.assign(N, -1);
    x.emb.assign(N * D, 0.0f);
    x.cat.assign(N * 2 * D, 0.0f);
    x.h.assign(N * D, 0.0f);
    x.xn.assign(N * D, 0.0f);
    x.logits.assign(N * V, 0.0f);
    x.dh.assign(N * D, 0.0f);
  }
  a->dh0.assign(N * D, 0.0f);
  a->dcat.assign(N * 2 * D, 0.0f);
}

void mtp_train_forward(TrainModel* tm, TrainActs* a, uint64_t seed, StepLosses* out) {
  const Backend& be = backend();
  const ModelConfig& c = tm->cfg;
  const int N = a->B * a->T, D = c.hidden, V = c.vocab;
  const float eps = c.rms_eps;
  out->mtp.assign(c.mtp_layers, 0.0);
  out->mtp_weight = tm->mtp_weight;
  const float* h_prev = a->h.data();  // (N, D)
  for (int k = 0; k < c.mtp_layers; ++k) {
    const MtpWeights& mw = tm->w.mtp[k];
    MtpActs& x = a->mtp[k];
    mtp_tokens(a, k);
    for (int t = 0; t < N; ++t)
      std::memcpy(x.emb.data() + static_cast<int64_t>(t) * D,
                  mw.embed + static_cast<int64_t>(x.ids[t]) * D, sizeof(float) * D);
    float* tmp = a->dtmp.data();  // (N, D)
    be.rmsnorm(tmp, x.emb.data(), mw.enorm, N, D, eps);
    cat_columns(x.cat.data(), tmp, N, D, 0, true);
    be.rmsnorm(tmp, h_prev, mw.hnorm, N, D, eps);
    cat_columns(x.cat.data(), tmp, N, D, D, true);
    be.linear_f32(x.h.data(), x.cat.data(), mw.eh_proj.w, nullptr, N, D, 2 * D);
    train_block_forward(tm, a, c.n_layers + k, x.h.data(), seed, true, out);
    be.rmsnorm(x.xn.data(), x.h.data(), mw.head_norm, N, D, eps);
    be.linear_f32(x.logits.data(), x.xn.data(), mw.head, nullptr, N, V, D);
    int n = 0;
    out->mtp[k] = be.cross_entropy(nullptr, x.logits.data(), x.targets.data(), N, V, 1.0f, &n,
                                   a->row_loss.data());
    h_prev = x.h.data();
  }
}

void mtp_train_backward(TrainModel* tm, TrainActs* a, float loss_scale, float ce_scale) {
  const Backend& be = backend();
  const ModelConfig& c = tm->cfg;
  const int N = a->B * a->T, D = c.hidden, V = c.vocab, Dm = c.mtp_layers;
  const int64_t ND = static_cast<int64_t>(N) * D;
  const float eps = c.rms_eps;
  const float scale = loss_scale * ce_scale * tm->mtp_weight / static_cast<float>(Dm);
  float* dx = a->dx.data();
  float* dtmp = a->dtmp.data();
  std::fill(a->mtp[Dm - 1].dh.begin(), a->mtp[Dm - 1].dh.end(), 0.0f);
  for (int k = Dm - 1; k >= 0; --k) {
    const MtpWeights& mw = tm->w.mtp[k];
    const MtpWeights& mg = tm->g.mtp[k];
    MtpActs& x = a->mtp[k];
    float* dh = x.dh.data();  // (N, D) holds the next module's gradient of h (zero for the last)
    be.cross_entropy(a->dlogits.data(), x.logits.data(), x.targets.data(), N, V, scale, nullptr,
                     a->row_loss.data());
    be.linear_backward(dx, wr(mg.head), nullptr, a->dlogits.data(), x.xn.data(), mw.head, N, V, D);
    be.rmsnorm_backward(dtmp, wr(mg.head_norm), dx, x.h.data(), mw.head_norm, N, D, eps);
    for (int64_t i = 0; i < ND; ++i) dh[i] += dtmp[i];
    train_block_backward(tm, a, c.n_layers + k, dh, loss_scale);  // dh: d eh_proj output
    be.linear_backward(a->dcat.data(), wr(mg.eh_proj.w), nullptr, dh, x.cat.data(),
                       mw.eh_proj.w, N, D, 2 * D);
    cat_columns(a->dcat.data(), dx, N, D, 0, false);
    be.rmsnorm_backward(dtmp, wr(mg.enorm), dx, x.emb.data(), mw.enorm, N, D, eps);
    float* ge = wr(mg.embed);
    for (int t = 0; t < N; ++t) {
      float* row = ge + static_cast<int64_t>(x.ids[t]) * D;
      const float* d = dtmp + static_cast<int64_t>(t) * D;
      for (int j = 0; j < D; ++j) row[j] += d[j];
    }
    cat_columns(a->dcat.data(), dx, N, D, D, false);
    const float* h_prev = k > 0 ? a->mtp[k - 1].h.data() : a->h.data();
    float* dprev = k > 0 ? a->mtp[k - 1].dh.data() : a->dh0.data();
    be.rmsnorm_backward(dprev, wr(mg.hnorm), dx, h_prev, mw.hnorm, N, D, eps);
  }
}

}  // namespace moe
