// Perplexity of a model on a token stream, and how far its next-token distributions move from a
// reference model's (e.g. a quantized checkpoint against the fp32 one it was made from).
//
// Windows: N ids give N - 1 predictions (position i predicts ids[i + 1]). They are cut into
// consecutive windows of `window` predictions: window w runs the inputs ids[w*W .. w*W + n) from
// an empty KV cache (n = W, or less for the last window) and scores every one of its positions,
// position j against ids[w*W + j + 1]. So each token sees at most W - 1 tokens of context and
// every token but the first is scored exactly once.
//
// Per scored position, with log-softmax in double precision:
//   cross-entropy  -log p_model(target)
//   KL(ref || model) = sum_v p_ref(v) (log p_ref(v) - log p_model(v))
//   |delta logit|  max over v of |logit_model(v) - logit_ref(v)|
//   top-1          argmax of the model's logits (first index on ties) vs the target (accuracy)
//                  and vs the reference's argmax (agreement)
// Perplexity = exp(mean cross-entropy). Both models run the same windows; the reference must have
// the same vocabulary.
#pragma once

#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace moe {

struct EvalStats {
  int64_t tokens = 0;      // scored positions
  int64_t windows = 0;
  int window = 0;
  double mean_ce = 0.0;    // nats per token
  double ppl = 0.0;        // exp(mean_ce)
  double top1_acc = 0.0;   // argmax == target
  double seconds = 0.0;    // model forward passes only
  // With a reference (has_ref):
  bool has_ref = false;
  double ref_mean_ce = 0.0, ref_ppl = 0.0, ref_top1_acc = 0.0, ref_seconds = 0.0;
  double ppl_ratio = 0.0;       // ppl / ref_ppl
  double mean_kl = 0.0;         // nats per token
  double max_kl = 0.0;          // largest per-position KL
  double max_abs_dlogit = 0.0;  // over all positions and vocab entries
  double mean_abs_dlogit = 0.0; // mean over all positions and vocab entries
  double top1_agree = 0.0;      // argmax(model) == argmax(ref)
};

// Scores m (and ref, if not null) on ids in windows of `window` predictions (see above).
// MoeError on window <= 0, fewer than 2 ids, an id outside a model's vocabulary or a reference
// whose vocabulary differs.
EvalStats eval_perplexity(const Model& m, const std::vector<int32_t>& ids, int window,
                          const Model* ref = nullptr);

// Natural-log softmax of a row of n logits, in double precision.
void log_softmax(const float* logits, int n, std::vector<double>* out);

}  // namespace moe
