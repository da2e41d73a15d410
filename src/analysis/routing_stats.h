// Routing analysis: pure functions on routing tables (per-expert loads, per-token top-k choices,
// label x expert contingency tables). Used by `moe inspect --report` and by tests.
//
// Definitions (written down once, used everywhere):
//  - Load fractions p_e = load_e / sum(load). E experts, mean = sum(load) / E.
//  - Gini coefficient G = MAD / (2 * mean), MAD = (1/E^2) sum_i sum_j |load_i - load_j| (mean
//    absolute difference over all ordered pairs, i == j included). G = 0 for a uniform load and
//    (E-1)/E when one expert gets everything.
//  - Entropy H = -sum_e p_e ln p_e in nats (0 ln 0 = 0); normalised H / ln E is 1 for a uniform
//    load, 0 for one-hot. With a single expert the normalised entropy is 1 (trivially balanced).
//  - Coefficient of variation CV = population std / mean; max/mean = max_e load_e / mean.
//  - Alert ("hot expert"): load_e > threshold * mean (strictly), threshold 3 by default.
//  - Zero tokens (all loads 0, or no experts): every statistic is 0 and there are no alerts.
//  - Capacity (as src/moe/router.cpp apply_capacity): C = ceil(N*K/E * cf); an expert over C keeps
//    its C highest-weight assignments, ties to the lower token index; cf <= 0 is dropless.
//  - Routing consistency: per token, Jaccard |A ∩ B| / |A ∪ B| of its two expert sets (duplicate
//    choices count once; two empty sets agree: 1); averaged over tokens (1 for zero tokens).
//  - Specialisation of a label (rows) x expert (columns) contingency table of counts n_le, with
//    row totals n_l, column totals n_e and grand total n:
//      lift_le = P(e | l) / P(e) = n_le * n / (n_l * n_e); NaN where n_l or n_e is 0;
//      significance = the adjusted standardized residual (Haberman 1973)
//        r_le = (n_le - m_le) / sqrt(m_le * (1 - n_l/n) * (1 - n_e/n)), m_le = n_l * n_e / n,
//      approximately standard normal under independence (|r| > 1.96 ~ p < 0.05 for one cell,
//      before any multiple-testing correction); 0 where its variance is 0 (empty row or column,
//      or a row/column holding every count);
//      overall Pearson chi-square = sum (n_le - m_le)^2 / m_le over non-empty rows and columns,
//      dof = (R-1)(C-1) and Cramér's V = sqrt(chi2 / (n * (min(R, C) - 1))) with R, C the numbers
//      of non-empty rows and columns (V = 0 when min(R, C) <= 1). V is 0 for independence and 1
//      when each label goes to its own expert.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops/capacity.h"

namespace moe {

struct Routing;

// ---- Load balance ------------------------------------------------------------------------------

struct LoadStats {
  int n_experts = 0;
  double total = 0.0;  // sum of loads
  double mean = 0.0;   // total / E
  double gini = 0.0;
  double entropy = 0.0;       // nats
  double entropy_norm = 0.0;  // entropy / ln E
  double cv = 0.0;
  double max_mean = 0.0;
  std::vector<int> hot;   // experts with load > threshold * mean, ascending
  std::vector<int> dead;  // experts with load 0 while total > 0, ascending
};

double load_gini(const std::vector<double>& load);
double load_entropy(const std::vector<double>& load);  // nats
double load_cv(const std::vector<double>& load);
double load_max_mean(const std::vector<double>& load);
// Experts whose load is strictly above threshold * mean (none when the total is 0).
std::vector<int> load_hot_experts(const std::vector<double>& load, double threshold = 3.0);
// All of the above at once. Loads must be finite and >= 0 (MoeError otherwise).
LoadStats load_stats(const std::vector<double>& load, double threshold = 3.0);

// ---- Per-token top-k choices -------------------------------------------------------------------

// Token-choice routing of N tokens: token t chose expert[t*K + k] with combine weight
// weight[t*K + k], k = 0..K-1 (weight may be empty when only the choices matter).
struct TopK {
  int n_tokens = 0, k = 0, n_experts = 0;
  std::vector<int32_t> expert;  // (N*K)
  std::vector<float> weight;    // (N*K) or empty
};

// Checks sizes and expert ranges; throws MoeError naming `what` on a mismatch.
void topk_validate(const TopK& r, const char* what);
// The choices of a token-choice Routing (before capacity). Expert-choice routings have no fixed
// per-token K: MoeError.
TopK topk_from_routing(const Routing& r);
// Selections per expert (E).
std::vector<double> topk_load(const TopK& r);

struct DropStats {
  int capacity = 0;  // per expert; 0 = dropless
  int64_t assignments = 0;
  int64_t dropped = 0;
  double rate = 0.0;                        // dropped / assignments, 0 for no assignments
  std::vector<int64_t> dropped_per_expert;  // (E)
  std::vector<char> kept;                   // (N*K) 0 = dropped
};
// Capacity dropping of `r` (weights required) with the given capacity factor. NaN weights rank
// below every number.
DropStats capacity_drops(const TopK& r, double capacity_factor);
// C = ceil(N*K/E * cf) (0 for cf <= 0): capacity_for of ops/capacity.h, as the router uses it.

struct Consistency {
  double mean_jaccard = 1.0;
  double top1_agreement = 1.0;  // fraction of tokens whose first choice is the same
  std::vector<double> jaccard;  // (N) per token
};
// Compares two routings of the same N tokens (K and E may differ). MoeError if N differs.
Consistency routing_consistency(const TopK& a, const TopK& b);

// ---- Specialisation ----------------------------------------------------------------------------

// Label x expert counts, row-major: count[l * n_experts + e].
struct Contingency {
  int n_labels = 0, n_experts = 0;
  std::vector<double> count;  // (L*E)
};

Contingency contingency_make(int n_labels, int n_experts);
// Adds the tokens of `r` with their labels (N): every one of a token's K choices counts once, or
// only the first choice with top1_only. Labels outside [0, n_labels) (e.g. 255 = none) are skipped.
void contingency_add(Contingency* c, const TopK& r, const std::vector<int32_t>& labels,
                     bool top1_only = false);

struct Specialisation {
  int n_labels = 0, n_experts = 0;
  double total = 0.0;
  std::vector<double> label_total;   // (L)
  std::vector<double> expert_total;  // (E)
  std::vector<double> count;         // (L*E) the table's counts
  std::vector<double> lift;          // (L*E), NaN where undefined
  std::vector<double> residual;      // (L*E) adjusted standardized residuals
  double chi2 = 0.0;
  int64_t dof = 0;
  double cramers_v = 0.0;
};
Specialisation specialisation(const Contingency& c);

struct LabelLift {
  int label = 0;
  double lift = 0.0, residual = 0.0, count = 0.0;  // count = n_le
};
// For each expert, up to top_n labels with label_total >= min_count and a defined lift, by lift
// descending (ties: lower label index).
std::vector<std::vector<LabelLift>> top_labels_per_expert(const Specialisation& s, int top_n = 5,
                                                          double min_count = 20.0);

}  // namespace moe
