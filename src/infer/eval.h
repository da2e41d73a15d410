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

// Self-speculative decoding's acceptance rate on a token stream (infer/speculative.h): greedy
// decoding drafts token i + 2 with MTP module 1 at position i (from the main model's hidden state
// there and token i + 1), and the main model accepts the draft when its own argmax at position
// i + 1 equals it. Here the context is the given text (teacher forcing) instead of the model's
// own output: windows of `window` inputs run from an empty cache as in eval_perplexity, and every
// position i with a position i + 1 in its window drafts once. Argmax takes the first index on ties.
struct MtpAcceptance {
  int64_t drafts = 0;
  double accept = 0.0;     // argmax(MTP at i) == argmax(main at i + 1)
  double draft_acc = 0.0;  // argmax(MTP at i) == ids[i + 2] (the text's token)
};
// MoeError on a model without MTP modules, window <= 0 or fewer than 3 ids.
MtpAcceptance eval_mtp_acceptance(const Model& m, const std::vector<int32_t>& ids, int window);

// Natural-log softmax of a row of n logits, in double precision.
void log_softmax(const float* logits, int n, std::vector<double>* out);

}  // namespace moe
