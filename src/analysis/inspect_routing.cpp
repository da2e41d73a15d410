#include "analysis/inspect_routing.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/error.h"
#include "infer/forward.h"
#include "train/dataset.h"

namespace moe {

namespace {

// Starts of the windows of W tokens that inspect routes from a shard of more than max_tokens
// tokens: ceil(max_tokens / W) windows (the caller cuts the last one short), shared equally among the genres of the shard
// (one group when it has no labels; a genre with room for fewer windows than its share passes
// the rest on). A genre's candidate windows tile its runs of tokens (no window crosses into
// another genre, none overlap); its share is taken evenly spaced among them. Sorted.
std::vector<int64_t> sample_windows(const Shard& sh, int64_t max_tokens, int W) {
  std::vector<std::vector<int64_t>> cand(256);  // by genre label (255 = none): window starts
  for (int64_t i = 0; i < sh.n;) {
    const int g = sh.genre ? sh.genre[i] : 0;
    int64_t j = i;
    while (j < sh.n && (sh.genre ? sh.genre[j] : 0) == g) ++j;
    for (int64_t b = i; b + W <= j; b += W) cand[g].push_back(b);
    i = j;
  }
  std::vector<int64_t> share(256, 0);
  for (int64_t left = (max_tokens + W - 1) / W; left > 0;) {
    bool gave = false;
    for (int g = 0; g < 256 && left > 0; ++g)
      if (share[g] < static_cast<int64_t>(cand[g].size())) ++share[g], --left, gave = true;
    if (!gave) break;
  }
  std::vector<int64_t> starts;
  for (int g = 0; g < 256; ++g) {
    const int64_t room = static_cast<int64_t>(cand[g].size());
    for (int64_t k = 0; k < share[g]; ++k) starts.push_back(cand[g][(2 * k + 1) * room / (2 * share[g])]);
  }
  std::sort(starts.begin(), starts.end());
  return starts;
}

// A token as a short visible label: leading/trailing spaces as ␣, newlines as ↵, tabs as ⇥.
std::string token_label(const Tokenizer& tok, int32_t id) {
  const std::string s = tokenizer_decode(tok, {id}, false);
  std::string o;
  for (char ch : s) {
    if (ch == ' ') o += "\xE2\x90\xA3";
    else if (ch == '\n') o += "\xE2\x86\xB5";
    else if (ch == '\t') o += "\xE2\x87\xA5";
    else o += ch;
  }
  return o.empty() ? strfmt("#%d", id) : o;
}

// Ids of the n most frequent tokens (ties: lower id), and each token's label index (-1 = other).
void frequent_tokens(const std::vector<int32_t>& ids, int n, std::vector<int32_t>* top,
                     std::vector<int32_t>* label) {
  std::vector<std::pair<int64_t, int32_t>> cnt;
  {
    std::vector<int64_t> c;
    for (int32_t id : ids) {
      if (id >= static_cast<int32_t>(c.size())) c.resize(id + 1, 0);
      ++c[id];
    }
    for (size_t i = 0; i < c.size(); ++i)
      if (c[i] > 0) cnt.emplace_back(-c[i], static_cast<int32_t>(i));
  }
  std::sort(cnt.begin(), cnt.end());
  top->clear();
  for (size_t i = 0; i < cnt.size() && static_cast<int>(i) < n; ++i) top->push_back(cnt[i].second);
  std::vector<int32_t> map;
  for (size_t i = 0; i < top->size(); ++i) {
    const int32_t id = (*top)[i];
    if (id >= static_cast<int32_t>(map.size())) map.resize(id + 1, -1);
    map[id] = static_cast<int32_t>(i);
  }
  label->resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    (*label)[i] = ids[i] < static_cast<int32_t>(map.size()) ? map[ids[i]] : -1;
}

nlohmann::ordered_json load_json(const LoadStats& s) {
  nlohmann::ordered_json j;
  j["gini"] = s.gini;
  j["entropy"] = s.entropy;
  j["entropy_norm"] = s.entropy_norm;
  j["cv"] = s.cv;
  j["max_mean"] = s.max_mean;
  j["hot_experts"] = s.hot;
  j["idle_experts"] = s.dead;
  return j;
}

// Lift table JSON and the report's matrix for one label kind; adds a text line per layer.
nlohmann::ordered_json specialisation_json(const Specialisation& sp,
                                           const std::vector<std::string>& names,
                                           double min_count) {
  nlohmann::ordered_json j;
  j["chi2"] = sp.chi2;
  j["dof"] = sp.dof;
  j["cramers_v"] = sp.cramers_v;
  j["significance"] = "adjusted standardized residual z (|z| > 1.96 ~ p < 0.05 per cell)";
  nlohmann::ordered_json experts = nlohmann::ordered_json::array();
  const auto top = top_labels_per_expert(sp, 5, min_count);
  for (size_t e = 0; e < top.size(); ++e) {
    nlohmann::ordered_json row = nlohmann::ordered_json::array();
    for (const LabelLift& ll : top[e])
      row.push_back({{"label", names[ll.label]},
                     {"lift", ll.lift},
                     {"z", ll.residual},
                     {"count", ll.count}});
    experts.push_back(row);
  }
  j["top_labels_per_expert"] = experts;
  return j;
}

}  // namespace

void inspect_data_load(InspectData* d, const std::string& path, const Tokenizer& tok,
                       int64_t max_tokens, int window) {
  *d = InspectData();
  if (max_tokens <= 0) fail("--tokens must be positive");
  if (window < 0) fail("--window must be positive");
  if (dataset_is_prepared(path)) {
    Dataset ds;
    dataset_open(&ds, path);
    const Shard& sh = ds.val.n > 0 ? ds.val : ds.train;
    const char* which = ds.val.n > 0 ? "validation" : "train";
    std::vector<int64_t> starts{0};
    int64_t W = std::min(sh.n, max_tokens);  // the first max_tokens tokens
    if (window > 0 && sh.n > max_tokens && window <= max_tokens) {
      std::vector<int64_t> spread = sample_windows(sh, max_tokens, window);
      if (!spread.empty()) starts = std::move(spread), W = window;
    }
    const int64_t n = std::min(static_cast<int64_t>(starts.size()) * W, max_tokens);
    d->source = starts.size() > 1
                    ? strfmt("%s (%s shard: %zu windows of %lld tokens spread over its %lld, "
                             "stratified by genre)", path.c_str(), which, starts.size(),
                             static_cast<long long>(W), static_cast<long long>(sh.n))
                    : strfmt("%s (%s shard, %lld tokens)", path.c_str(), which,
                             static_cast<long long>(n));
    d->ids.resize(n);
    std::vector<int64_t> at(n);  // shard index of each token
    for (int64_t i = 0; i < n; ++i) at[i] = starts[i / W] + i % W;
    for (int64_t i = 0; i < n; ++i) d->ids[i] = sh.token(at[i]);
    if (sh.labeled) {
      d->genre.resize(n);
      d->pos.resize(n);
      for (int64_t i = 0; i < n; ++i) {
        d->genre[i] = sh.genre[at[i]] == 255 ? -1 : sh.genre[at[i]];
        d->pos[i] = sh.pos[at[i]] == 255 ? -1 : sh.pos[at[i]];
      }
      d->genre_names = ds.genres;
      d->pos_names = ds.pos_tags;
    }
    return;
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("%s: cannot open the data (a prepared data folder or a text file)", path.c_str());
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (text.empty()) fail("%s: the data file is empty", path.c_str());
  d->ids = tokenizer_encode(tok, text, false);
  if (static_cast<int64_t>(d->ids.size()) > max_tokens) d->ids.resize(max_tokens);
  if (d->ids.empty()) fail("%s: the text encodes to no tokens", path.c_str());
  d->source = strfmt("%s (%zu tokens)", path.c_str(), d->ids.size());
}

namespace {

// The MTP modules over the window just run (its n tokens ids[0..n)): module k routes rows 0 ..
// n - k - 1 (window positions), its input the previous depth's hidden states (*h, (n, D), the
// main model's last residual stream for k = 1; overwritten by each module's output) and tokens
// j + k. Appends each MoE block's captured routing to out (rows i0 + j).
void route_mtp(const Model& m, InferState* s, const RouteCapture& cap, const int32_t* ids, int n,
               int64_t i0, std::vector<float>* h, std::vector<float>* h_out,
               std::vector<LayerRoute>* out) {
  const ModelConfig& c = m.cfg;
  for (int k = 1; k <= c.mtp_layers && n - k > 0; ++k) {
    const int rows = n - k, l = c.n_layers + k - 1;
    infer_mtp_forward(m, s, k - 1, h->data(), ids + k, 0, rows, h_out->data());
    std::swap(*h, *h_out);
    for (LayerRoute& r : *out) {
      if (r.layer != l) continue;
      r.topk.expert.insert(r.topk.expert.end(), cap.idx[l].begin(), cap.idx[l].end());
      r.topk.weight.insert(r.topk.weight.end(), cap.w[l].begin(), cap.w[l].end());
      for (int j = 0; j < rows; ++j) r.at.push_back(i0 + j);
    }
  }
}

// The labels of the tokens a layer routed (all of them unless r.at lists a subset).
const std::vector<int32_t>& labels_of(const LayerRoute& r, const std::vector<int32_t>& labels,
                                      std::vector<int32_t>* scratch) {
  if (r.at.empty() || labels.empty()) return labels;
  scratch->resize(r.at.size());
  for (size_t i = 0; i < r.at.size(); ++i) (*scratch)[i] = labels[r.at[i]];
  return *scratch;
}

// "4", or "4 (MTP 1)" for an MTP module's block.
std::string layer_name(const LayerRoute& r) {
  return r.mtp ? strfmt("%d (MTP %d)", r.layer, r.mtp) : std::to_string(r.layer);
}

// Per expert: the strongest labels of each kind (lift > 1), for every MoE layer (layers: the
// JSON of each layer, with its "specialisation").
std::string specialisation_text(const nlohmann::ordered_json& layers,
                                const std::vector<LayerRoute>& base, bool labeled, int E) {
  std::string T;
  T += "\nspecialisation: labels an expert receives most over chance (lift, shown when the adjusted "
       "standardized residual z >= 3):\n";
  for (size_t li = 0; li < base.size(); ++li) {
    const auto& sj = layers[li]["specialisation"];
    T += "layer " + layer_name(base[li]);
    if (labeled)
      T += strfmt(": Cramer's V pos %.3f, genre %.3f", sj["pos"]["cramers_v"].get<double>(),
                  sj["genre"]["cramers_v"].get<double>());
    T += strfmt("%s tokens %.3f\n", labeled ? "," : ": Cramer's V", sj["tokens"]["cramers_v"].get<double>());
    for (int e = 0; e < E; ++e) {
      std::string line = strfmt("  E%-3d", e);
      for (const char* key : {"pos", "genre", "tokens"}) {
        if (!sj.contains(key)) continue;
        const auto& rows = sj[key]["top_labels_per_expert"][e];
        std::string s;
        for (size_t q = 0; q < rows.size() && q < 3; ++q) {
          // Only over-represented labels that are significant (|z| >= 3).
          if (!(rows[q]["lift"].get<double>() > 1.0) || !(rows[q]["z"].get<double>() >= 3.0))
            continue;
          s += strfmt("%s%s %.1fx", s.empty() ? "" : ", ",
                      rows[q]["label"].get<std::string>().c_str(), rows[q]["lift"].get<double>());
        }
        line += strfmt(" | %s: %s", key, s.empty() ? "-" : s.c_str());
      }
      T += line + "\n";
    }
  }
  return T;
}

}  // namespace

std::vector<LayerRoute> collect_routing(const Model& m, const std::vector<int32_t>& ids,
                                        int window, float noise, uint64_t seed) {
  const ModelConfig& c = m.cfg;
  if (window <= 0) fail("--window must be positive");
  if (c.n_moe_layers() == 0) fail("the model has no MoE layers to inspect");
  if (c.router.kind == ROUTER_EXPERT_CHOICE)
    fail("expert-choice routing has no fixed per-token top-k to inspect");
  const int N = static_cast<int>(ids.size()), K = c.top_k;
  if (N == 0) fail("no tokens to inspect");
  const int W = std::min(window, N);
  InferState s;
  infer_state_init(&s, m, W, W);
  RouteCapture cap;
  s.capture = &cap;
  s.embed_noise = noise;
  s.noise_seed = seed;
  std::vector<LayerRoute> out;
  bool mtp_moe = false;
  for (int l = 0; l < c.n_layers + c.mtp_layers; ++l) {
    if (!c.is_moe[l]) continue;
    LayerRoute r;
    r.layer = l;
    r.mtp = l < c.n_layers ? 0 : l - c.n_layers + 1;
    mtp_moe |= r.mtp > 0;
    r.topk.k = K;
    r.topk.n_experts = c.n_experts;
    out.push_back(std::move(r));
  }
  std::vector<float> h, h_out;  // (W, D) MTP inputs and outputs
  if (mtp_moe) h.assign(static_cast<size_t>(W) * c.hidden, 0.0f), h_out = h;
  for (int i = 0; i < N; i += W) {
    const int n = std::min(W, N - i);
    s.pos = 0;
    infer_forward(m, &s, ids.data() + i, n, false);
    for (LayerRoute& r : out) {
      if (r.mtp) continue;
      const auto& idx = cap.idx[r.layer];
      const auto& w = cap.w[r.layer];
      r.topk.expert.insert(r.topk.expert.end(), idx.begin(), idx.end());
      r.topk.weight.insert(r.topk.weight.end(), w.begin(), w.end());
    }
    if (!mtp_moe) continue;
    std::copy(s.h.begin(), s.h.begin() + static_cast<int64_t>(n) * c.hidden, h.begin());
    route_mtp(m, &s, cap, ids.data() + i, n, i, &h, &h_out, &out);
  }
  for (LayerRoute& r : out) {
    r.topk.n_tokens = static_cast<int>(r.topk.expert.size() / K);
    topk_validate(r.topk, "captured routing");
  }
  return out;
}

InspectResult inspect_routing(const Model& m, const Tokenizer& tok, const InspectData& d,
                              const Model* other, const InspectOptions& o) {
  const ModelConfig& c = m.cfg;
  const int E = c.n_experts;
  const int64_t N = static_cast<int64_t>(d.ids.size());
  if (other) {
    const ModelConfig& c2 = other->cfg;
    if (c2.n_layers != c.n_layers || c2.is_moe != c.is_moe || c2.n_experts != E ||
        c2.vocab != c.vocab)
      fail("--compare: the second checkpoint's layers, experts or vocabulary differ from --model's");
  }
  const std::vector<LayerRoute> base = collect_routing(m, d.ids, o.window);
  std::vector<LayerRoute> pert, oth;
  if (o.perturb > 0) pert = collect_routing(m, d.ids, o.window, o.perturb, o.seed);
  if (other) oth = collect_routing(*other, d.ids, o.window);

  std::vector<int32_t> top_ids, tok_label;
  frequent_tokens(d.ids, o.token_labels, &top_ids, &tok_label);
  std::vector<std::string> tok_names;
  for (int32_t id : top_ids) tok_names.push_back(token_label(tok, id));
  const bool labeled = !d.pos.empty() && !d.genre.empty();

  InspectResult res;
  nlohmann::ordered_json& J = res.json;
  J["data"] = d.source;
  J["tokens"] = N;
  J["window"] = o.window;
  J["experts"] = E;
  J["top_k"] = c.top_k;
  J["capacity_factor"] = o.capacity_factor;
  J["alert_threshold"] = o.threshold;
  J["perturbation"] = o.perturb;
  J["conventions"] =
      "load: selections per expert (all k choices); Gini = mean |load_i - load_j| / (2 mean); "
      "entropy in nats, normalised by ln E; CV = std / mean; consistency = mean Jaccard overlap "
      "of per-token top-k sets; lift = P(expert | label) / P(expert)";
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();

  ReportData& R = res.report;
  R.n_experts = E;
  R.mtp_first = c.mtp_layers > 0 ? c.n_layers : -1;
  R.alert_threshold = o.threshold;
  R.summary_note = strfmt("%lld tokens of %s, windows of %d tokens", static_cast<long long>(N),
                          d.source.c_str(), o.window);
  std::string& T = res.text;
  T += strfmt("routing of %lld tokens (%s), windows of %d; capacity factor %g for drop rates\n",
              static_cast<long long>(N), d.source.c_str(), o.window, o.capacity_factor);
  T += "layer   gini  entropy     cv  max/mean  dropped  consist(pert)  consist(ckpt)  alerts\n";

  for (size_t li = 0; li < base.size(); ++li) {
    const LayerRoute& r = base[li];
    const std::vector<double> load = topk_load(r.topk);
    const DropStats drops = capacity_drops(r.topk, o.capacity_factor);
    LayerSummary ls = layer_summary(r.layer, load, drops.rate, o.threshold);
    nlohmann::ordered_json lj;
    lj["layer"] = r.layer;
    if (r.mtp) lj["mtp"] = r.mtp, lj["tokens"] = r.topk.n_tokens;  // MTP module k's block
    lj["load"] = load;
    lj["stats"] = load_json(ls.load);
    lj["dropped"] = {{"capacity_factor", o.capacity_factor},
                     {"capacity", drops.capacity},
                     {"assignments", drops.assignments},
                     {"dropped", drops.dropped},
                     {"rate", drops.rate},
                     {"per_expert", drops.dropped_per_expert}};
    nlohmann::ordered_json cj;
    if (!pert.empty()) {
      const Consistency cs = routing_consistency(r.topk, pert[li].topk);
      ls.consistency_perturb = cs.mean_jaccard;
      cj["perturbed"] = {{"noise", o.perturb},
                         {"mean_jaccard", cs.mean_jaccard},
                         {"top1_agreement", cs.top1_agreement}};
    }
    if (!oth.empty()) {
      const Consistency cs = routing_consistency(r.topk, oth[li].topk);
      ls.consistency_ckpt = cs.mean_jaccard;
      cj["checkpoint"] = {{"mean_jaccard", cs.mean_jaccard},
                          {"top1_agreement", cs.top1_agreement}};
    }
    lj["consistency"] = cj;

    // Specialisation.
    nlohmann::ordered_json sj;
    auto add_spec = [&](const char* key, const std::vector<int32_t>& labels,
                        const std::vector<std::string>& names, const char* title,
                        std::vector<LiftMatrix>* mats) {
      Contingency ct = contingency_make(static_cast<int>(names.size()), E);
      std::vector<int32_t> scratch;
      contingency_add(&ct, r.topk, labels_of(r, labels, &scratch));
      const Specialisation sp = specialisation(ct);
      sj[key] = specialisation_json(sp, names, o.min_count);
      mats->push_back(
          lift_matrix(sp, names, "Layer " + layer_name(r) + " · " + title, o.min_count));
      return sp;
    };
    std::vector<Specialisation> specs;
    if (labeled) {
      specs.push_back(add_spec("pos", d.pos, d.pos_names, "POS tag", &R.pos_lift));
      specs.push_back(add_spec("genre", d.genre, d.genre_names, "genre", &R.genre_lift));
    }
    specs.push_back(add_spec("tokens", tok_label, tok_names, "token", &R.token_lift));
    lj["specialisation"] = sj;
    layers.push_back(lj);

    auto cons = [](double v) { return v >= 0 ? strfmt("%13.3f", v) : std::string(12, ' ') + "-"; };
    std::string alerts;
    for (const std::string& a : ls.alerts) alerts += (alerts.empty() ? "" : "; ") + a;
    T += strfmt("%5d  %5.3f  %7.3f  %5.3f  %8.2f  %6.2f%%  ", r.layer, ls.load.gini,
                ls.load.entropy_norm, ls.load.cv, ls.load.max_mean, 100.0 * drops.rate) +
         cons(ls.consistency_perturb) + "  " + cons(ls.consistency_ckpt) +
         "  " + (alerts.empty() ? "ok" : "ALERT: " + alerts) +
         (r.mtp ? strfmt("  [MTP module %d's block]", r.mtp) : "") + "\n";
    R.summary.push_back(std::move(ls));
  }
  J["layers"] = layers;

  T += specialisation_text(J["layers"], base, labeled, E);

  // Sample: the first sample_tokens tokens, top-1 expert per MoE layer.
  const int ns = static_cast<int>(std::min<int64_t>(N, o.sample_tokens));
  for (int t = 0; t < ns; ++t) R.sample.tokens.push_back(tokenizer_decode(tok, {d.ids[t]}, false));
  for (const LayerRoute& r : base) {
    R.sample.layers.push_back(r.layer);
    std::vector<int> row(ns);
    std::fill(row.begin(), row.end(), -1);  // tokens an MTP block did not route: none
    for (int i = 0; i < r.topk.n_tokens; ++i) {
      const int64_t t = r.at.empty() ? i : r.at[i];
      if (t < ns) row[t] = r.topk.expert[static_cast<size_t>(i) * r.topk.k];
    }
    R.sample.top1.push_back(std::move(row));
  }
  return res;
}

}  // namespace moe
