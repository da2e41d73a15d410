// infer_forward_batch (continuous batching) against each sequence decoded alone through
// infer_forward, on every golden fixture: mixed prefill chunks and decode steps of several
// sequences in one call must give each sequence the logits it gets alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "infer/forward.h"
#include "core/error.h"
#include "test_util.h"

namespace moe {
namespace {

struct Seq {
  std::vector<int32_t> tokens;     // prompt followed by forced continuation
  std::vector<LayerCache> cache;   // [L]
  int pos = 0;
};

float max_abs(const float* a, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i]));
  return m;
}

// The logits after every prefix length of `tokens` (from 3 on), running alone in one state.
std::vector<std::vector<float>> alone(const Model& m, const std::vector<int32_t>& tokens, int ctx) {
  InferState st;
  infer_state_init(&st, m, 8, ctx);
  std::vector<std::vector<float>> out;
  infer_forward(m, &st, tokens.data(), 3, false);
  out.emplace_back(st.logits.begin(), st.logits.begin() + m.cfg.vocab);
  for (size_t i = 3; i < tokens.size(); ++i) {
    infer_forward(m, &st, &tokens[i], 1, false);
    out.emplace_back(st.logits.begin(), st.logits.begin() + m.cfg.vocab);
  }
  return out;
}

TEST(ForwardBatch, EqualsEachSequenceAlone) {
  const int ctx = 32;
  for (const std::string& name : moe_test::fixture_names()) {
    SCOPED_TRACE(name);
    Model m;
    model_load(&m, moe_test::fixture_path(name));
    const int V = m.cfg.vocab;
    // Three sequences of different lengths; sequence 2 joins two steps late.
    std::vector<Seq> seqs(3);
    for (int i = 0; i < 3; ++i) {
      for (int t = 0; t < 8 + 2 * i; ++t) seqs[i].tokens.push_back((7 * t + 31 * i + 5) % V);
      InferState tmp;
      infer_state_init(&tmp, m, 1, ctx);
      seqs[i].cache = tmp.cache;
    }
    std::vector<std::vector<std::vector<float>>> ref;
    for (const Seq& q : seqs) ref.push_back(alone(m, q.tokens, ctx));
    InferState st;
    infer_state_init(&st, m, 16, ctx);
    std::vector<size_t> done(3, 0);  // logits checked per sequence
    for (int step = 0; step < 16; ++step) {
      std::vector<SeqSpan> spans;
      std::vector<int> who;
      for (int i = 0; i < 3; ++i) {
        Seq& q = seqs[i];
        if ((i == 2 && step < 2) || q.pos >= static_cast<int>(q.tokens.size())) continue;
        SeqSpan sp;
        sp.cache = q.cache.data();
        sp.pos = q.pos;
        sp.ctx = ctx;
        sp.ids = q.tokens.data() + q.pos;
        sp.n = q.pos == 0 ? 3 : 1;  // a 3-token prefill chunk, then decode steps
        spans.push_back(sp);
        who.push_back(i);
      }
      if (spans.empty()) break;
      infer_forward_batch(m, &st, spans.data(), static_cast<int>(spans.size()));
      for (size_t j = 0; j < spans.size(); ++j) {
        Seq& q = seqs[who[j]];
        q.pos += spans[j].n;
        const std::vector<float>& want = ref[who[j]][done[who[j]]++];
        const float* got = st.logits.data() + j * V;
        float diff = 0.0f;
        for (int v = 0; v < V; ++v) diff = std::max(diff, std::fabs(got[v] - want[v]));
        EXPECT_LE(diff, 1e-5f * max_abs(want.data(), V)) << "sequence " << who[j] << " step " << step;
      }
    }
    for (int i = 0; i < 3; ++i) EXPECT_EQ(done[i], ref[i].size()) << "sequence " << i;
  }
}

TEST(ForwardBatch, RejectsOverfullCalls) {
  Model m;
  model_load(&m, moe_test::fixture_path(moe_test::fixture_names().front()));
  InferState st;
  infer_state_init(&st, m, 2, 8);
  std::vector<int32_t> ids = {1, 2, 3};
  SeqSpan sp;
  sp.cache = st.cache.data();
  sp.ctx = 8;
  sp.ids = ids.data();
  sp.n = 3;
  EXPECT_THROW(infer_forward_batch(m, &st, &sp, 1), MoeError);  // more than T_max
  sp.n = 1;
  sp.pos = 8;
  EXPECT_THROW(infer_forward_batch(m, &st, &sp, 1), MoeError);  // context full
}

}  // namespace
}  // namespace moe
