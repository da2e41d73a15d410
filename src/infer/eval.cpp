#include "infer/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/clock.h"
#include "core/error.h"
#include "infer/forward.h"
#include "ops/backend.h"

namespace moe {

namespace {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

// Runs n tokens from an empty cache; returns the seconds taken. Logits land in s->logits (n, V).
double run_window(const Model& m, InferState* s, const int32_t* ids, int n) {
  const double t0 = now_s();
  s->pos = 0;
  infer_forward(m, s, ids, n, true);
  return now_s() - t0;
}

}  // namespace

void log_softmax(const float* logits, int n, std::vector<double>* out) {
  out->resize(n);
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int i = 0; i < n; ++i) (*out)[i] = static_cast<double>(logits[i]) - lse;
}

EvalStats eval_perplexity(const Model& m, const std::vector<int32_t>& ids, int window,
                          const Model* ref) {
  if (window <= 0) fail("--window must be positive (got %d)", window);
  if (ids.size() < 2) fail("the data has %zu token(s); scoring needs at least 2", ids.size());
  const int V = m.cfg.vocab;
  if (ref && ref->cfg.vocab != V)
    fail("--ref %s: vocab_size %d differs from the model's %d (%s)", ref->cfg.path.c_str(),
         ref->cfg.vocab, V, m.cfg.path.c_str());
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= V)
      fail("the data's token %zu is id %d, outside the model's vocabulary of %d", i, ids[i], V);

  const int64_t N = static_cast<int64_t>(ids.size()) - 1;  // predictions
  const int W = static_cast<int>(std::min<int64_t>(window, N));
  InferState sm, sr;
  infer_state_init(&sm, m, W, W);
  if (ref) infer_state_init(&sr, *ref, W, W);

  EvalStats r;
  r.window = W;
  r.has_ref = ref != nullptr;
  double ce = 0, ref_ce = 0, kl = 0, abs_dl = 0;
  int64_t hit = 0, ref_hit = 0, agree = 0;
  std::vector<double> lp, lq;
  for (int64_t start = 0; start < N; start += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, N - start));
    const int32_t* in = ids.data() + start;
    r.seconds += run_window(m, &sm, in, n);
    if (ref) r.ref_seconds += run_window(*ref, &sr, in, n);
    ++r.windows;
    for (int j = 0; j < n; ++j) {
      const int32_t target = in[j + 1];
      const float* row = sm.logits.data() + static_cast<int64_t>(j) * V;
      log_softmax(row, V, &lq);
      ce -= lq[target];
      const int top = argmax(row, V);
      hit += top == target;
      if (!ref) continue;
      const float* rrow = sr.logits.data() + static_cast<int64_t>(j) * V;
      log_softmax(rrow, V, &lp);
      ref_ce -= lp[target];
      const int rtop = argmax(rrow, V);
      ref_hit += rtop == target;
      agree += rtop == top;
      double k = 0, dl = 0;
      for (int v = 0; v < V; ++v) {
        k += std::exp(lp[v]) * (lp[v] - lq[v]);
        const double d = std::fabs(static_cast<double>(row[v]) - rrow[v]);
        dl += d;
        r.max_abs_dlogit = std::max(r.max_abs_dlogit, d);
      }
      kl += k;
      abs_dl += dl;
      r.max_kl = std::max(r.max_kl, k);
    }
  }
  r.tokens = N;
  const double n = static_cast<double>(N);
  r.mean_ce = ce / n;
  r.ppl = std::exp(r.mean_ce);
  r.top1_acc = static_cast<double>(hit) / n;
  if (ref) {
    r.ref_mean_ce = ref_ce / n;
    r.ref_ppl = std::exp(r.ref_mean_ce);
    r.ref_top1_acc = static_cast<double>(ref_hit) / n;
    r.ppl_ratio = r.ppl / r.ref_ppl;
    r.mean_kl = kl / n;
    r.mean_abs_dlogit = abs_dl / (n * V);
    r.top1_agree = static_cast<double>(agree) / n;
  }
  return r;
}

MtpAcceptance eval_mtp_acceptance(const Model& m, const std::vector<int32_t>& ids, int window) {
  const ModelConfig& c = m.cfg;
  if (c.mtp_layers <= 0) fail("%s: the model has no MTP modules to draft with", c.path.c_str());
  if (window <= 0) fail("--window must be positive (got %d)", window);
  if (ids.size() < 3) fail("the data has %zu token(s); drafting needs at least 3", ids.size());
  const int V = c.vocab, D = c.hidden;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= V)
      fail("the data's token %zu is id %d, outside the model's vocabulary of %d", i, ids[i], V);
  const int64_t N = static_cast<int64_t>(ids.size()) - 2;  // positions with a token 2 ahead
  const int W = static_cast<int>(std::min<int64_t>(window, N + 1));
  InferState s;
  infer_state_init(&s, m, W, W);
  std::vector<int32_t> main_top(W);            // (W) the main model's argmax per position
  std::vector<float> h(static_cast<size_t>(W) * D), h_out(h.size()), xn(h.size());  // (W, D)
  std::vector<float> logits(static_cast<size_t>(W) * V);                              // (W, V)
  const MtpWeights& mw = m.mtp[0];
  Linear head;
  head.w = mw.head;
  head.q = mw.head_q;
  head.out = V;
  head.in = D;
  const Backend& be = backend();
  MtpAcceptance r;
  int64_t accepted = 0, correct = 0;
  for (int64_t start = 0; start < N; start += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, N + 1 - start));  // inputs of the window
    if (n < 2) break;
    const int32_t* in = ids.data() + start;
    s.pos = 0;
    infer_forward(m, &s, in, n, true);
    for (int j = 0; j < n; ++j) main_top[j] = argmax(s.logits.data() + static_cast<int64_t>(j) * V, V);
    std::copy(s.h.begin(), s.h.begin() + static_cast<int64_t>(n) * D, h.begin());
    const int rows = n - 1;  // positions 0 .. n - 2 draft; their tokens i + 1 are in[1 .. n)
    infer_mtp_forward(m, &s, 0, h.data(), in + 1, 0, rows, h_out.data());
    be.rmsnorm(xn.data(), h_out.data(), mw.head_norm, rows, D, c.rms_eps);
    be.linear(logits.data(), xn.data(), head, rows, &s.lin);
    for (int j = 0; j < rows; ++j) {
      const int draft = argmax(logits.data() + static_cast<int64_t>(j) * V, V);
      accepted += draft == main_top[j + 1];
      correct += draft == in[j + 2];
    }
    r.drafts += rows;
  }
  r.accept = r.drafts ? static_cast<double>(accepted) / r.drafts : 0.0;
  r.draft_acc = r.drafts ? static_cast<double>(correct) / r.drafts : 0.0;
  return r;
}

}  // namespace moe
