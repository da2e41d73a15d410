// The experiment registry, results, markdown section, raw-number JSON and plots of
// `moe experiment` (analysis/experiments.h), on hand-made runs with hand-computed answers.
#include "analysis/experiments.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include "core/error.h"
#include "model/config.h"
#include "test_util.h"
#include "train/trainer.h"

namespace moe {
namespace {

TEST(Experiments, RegistryIsConsistent) {
  std::set<std::string> names;
  for (const Experiment& e : experiment_registry()) {
    EXPECT_TRUE(names.insert(e.name).second) << e.name;
    EXPECT_GE(e.runs.size(), 2u) << e.name;
    EXPECT_GT(e.steps, 0);
    EXPECT_GT(e.quick_steps, 0);
    std::set<std::string> runs, bases;
    for (const ExpRun& b : e.bases) bases.insert(b.name);
    for (const ExpRun& r : e.runs) {
      EXPECT_TRUE(runs.insert(r.name).second) << e.name << ": " << r.name;
      if (!r.base.empty()) EXPECT_TRUE(bases.count(r.base)) << e.name << ": " << r.base;
      if (!r.upcycle.empty()) EXPECT_FALSE(r.base.empty()) << e.name << ": " << r.name;
    }
    if (!e.bases.empty()) EXPECT_GT(e.base_steps, 0) << e.name;
    if (e.metrics & EXP_METRIC_HORIZON) EXPECT_TRUE(runs.count(e.reference)) << e.name;
    EXPECT_EQ(experiment_find(e.name), &e);
  }
  for (const char* n : {"moe-vs-dense", "expert-count", "fine-grained", "shared-expert", "routers",
                        "balancing", "z-loss", "capacity", "upcycling", "fine-tuning", "mtp"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_EQ(experiment_find("all"), nullptr);
  EXPECT_EQ(experiment_find("nope"), nullptr);
}

TEST(Experiments, MeanAndSampleSd) {
  const MeanSd m = mean_sd({1.0, 2.0, 3.0, NAN});
  EXPECT_EQ(m.n, 3);
  EXPECT_DOUBLE_EQ(m.mean, 2.0);
  EXPECT_DOUBLE_EQ(m.sd, 1.0);  // sqrt(((-1)^2 + 0 + 1^2) / 2)
  EXPECT_EQ(mean_sd({NAN}).n, 0);
  EXPECT_DOUBLE_EQ(mean_sd({4.0}).sd, 0.0);
}

std::string write_lines(const std::string& text) {
  const std::string path = moe_test::make_temp_dir("exp_metrics") + "/metrics.jsonl";
  std::ofstream(path) << text;
  return path;
}

TEST(Experiments, ReadsMetrics) {
  const std::string path = write_lines(
      R"({"step":1,"ce":5.0,"layers":[{"max_mean":3.0,"dropped":0.2,"max_logit":1.5}]}
{"step":2,"ce":5.5,"layers":[{"max_mean":2.0,"dropped":0.1,"max_logit":4.0},{"max_mean":2.5,"dropped":0.3}],"val_loss":5.4}
{"step":3,"ce":5.2,"layers":[{"max_mean":1.0,"dropped":0.0,"max_logit":2.0}]}
{"step":4,"ce":4.0,"layers":[{"max_mean":1.5,"dropped":0.1}],"val_loss":4.5,"val_loss_capacity":4.6}
{"final":true,"step":4,"val_loss":4.5,"val_loss_capacity":4.6}
)");
  const ExpRunResult r = experiment_read_metrics(path, 7, 2);
  EXPECT_EQ(r.seed, 7);
  EXPECT_FALSE(r.diverged);
  EXPECT_EQ(r.steps, 4);
  EXPECT_EQ(r.val_step, (std::vector<double>{2, 4}));
  EXPECT_EQ(r.val_loss, (std::vector<double>{5.4, 4.5}));
  EXPECT_DOUBLE_EQ(r.final_val, 4.5);
  EXPECT_DOUBLE_EQ(r.final_val_capacity, 4.6);
  EXPECT_DOUBLE_EQ(r.train_tail, (5.2 + 4.0) / 2);  // the last 2 steps
  EXPECT_DOUBLE_EQ(r.max_mean, (1.0 + 1.5) / 2);    // worst layer per step
  EXPECT_DOUBLE_EQ(r.dropped, (0.0 + 0.1) / 2);     // mean over layers per step
  EXPECT_DOUBLE_EQ(r.max_logit, 4.0);               // over all steps
  EXPECT_EQ(r.spikes, 1);                           // 5.0 -> 5.5 (+10%); 5.2 -> 4.0 is no spike
}

TEST(Experiments, ReadsDivergedRunAndRejectsBadLines) {
  const ExpRunResult r = experiment_read_metrics(
      write_lines("{\"step\":1,\"ce\":5.0}\n{\"step\":2,\"ce\":9.0,\"val_loss\":8.0}\n"), 1, 10);
  EXPECT_TRUE(r.diverged);
  EXPECT_TRUE(std::isnan(r.final_val));
  EXPECT_EQ(r.val_loss.size(), 1u);
  const std::string bad = write_lines("{\"step\":1,\"ce\":5.0}\nnot json\n");
  try {
    experiment_read_metrics(bad, 1, 10);
    FAIL() << "no error";
  } catch (const MoeError& e) {
    EXPECT_NE(std::string(e.what()).find(bad + ":2:"), std::string::npos) << e.what();
  }
}

ExpRunResult curve(int seed, std::vector<double> steps, std::vector<double> loss) {
  ExpRunResult r;
  r.seed = seed;
  r.val_step = std::move(steps);
  r.val_loss = std::move(loss);
  r.final_val = r.val_loss.back();
  r.max_logit = NAN;  // a router without logits
  return r;
}

TEST(Experiments, MeanCurveAndOvertakeStep) {
  ExpConfigResult dense{"dense", "", {}, {curve(1, {10, 20, 30}, {6.0, 5.0, 4.6}),
                                          curve(2, {10, 20, 30}, {6.2, 5.2, 4.8})}};
  ExpConfigResult moe{"moe", "", {}, {curve(1, {10, 20, 30}, {6.5, 5.2, 4.5}),
                                      curve(2, {10, 20, 30}, {6.5, 5.0, 4.6})}};
  std::vector<double> x, y;
  experiment_mean_curve(dense, &x, &y);
  EXPECT_EQ(x, (std::vector<double>{10, 20, 30}));
  EXPECT_DOUBLE_EQ(y[0], 6.1);
  // moe's mean: 6.5, 5.1, 4.55 against dense's 6.1, 5.1, 4.7: first lower at step 30 (5.1 ties).
  EXPECT_DOUBLE_EQ(experiment_overtake_step(moe, dense), 30.0);
  EXPECT_DOUBLE_EQ(experiment_overtake_step(dense, moe), 10.0);
  ExpConfigResult worse{"worse", "", {}, {curve(1, {10, 20, 30}, {7, 7, 7})}};
  EXPECT_DOUBLE_EQ(experiment_overtake_step(worse, dense), -1.0);
}

ExpResult sample_result() {
  ExpResult r;
  r.name = "moe-vs-dense";
  r.title = "MoE against dense";
  r.claim = "MoE wins <sometimes> & more";
  r.quick = true;
  r.steps = 30;
  r.mode_describe = "tiny";
  r.metrics = EXP_METRIC_HORIZON | EXP_METRIC_GAP;
  r.reference = "dense";
  r.configs = {{"dense", "--experts 1", {1000, 1000, 2000.0, "dense"},
                {curve(1, {10, 20, 30}, {6.0, 5.0, 4.6}), curve(2, {10, 20, 30}, {6.2, 5.2, 4.8})}},
               {"moe", "--experts 8", {8000, 2000, 3000.0, "moe"},
                {curve(1, {10, 20, 30}, {6.5, 5.2, 4.5}), curve(2, {10, 20, 30}, {6.5, 5.0, 4.6})}}};
  r.configs[1].seeds[1].diverged = false;
  r.configs[0].seeds[0].train_tail = 4.0;
  r.configs[0].seeds[1].train_tail = 4.2;
  return r;
}

TEST(Experiments, MarkdownSectionTableAndRanking) {
  const std::string md = experiment_markdown(sample_result(), "experiments/moe-vs-dense.svg");
  EXPECT_NE(md.find("**Quick mode**"), std::string::npos);
  EXPECT_NE(md.find("| configuration | parameters | active |"), std::string::npos) << md;
  // dense: 4.6 and 4.8 -> 4.7000 ± 0.1414; moe: 4.5, 4.6 -> 4.5500 ± 0.0707, overtakes at 30.
  EXPECT_NE(md.find("| dense | 0.00M | 0.00M | 0.00M | 4.7000 ± 0.1414 | (reference) |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| 4.5500 ± 0.0707 | step 30 |"), std::string::npos) << md;
  // gap of dense: (4.6 - 4.0, 4.8 - 4.2) = 0.6 ± 0
  EXPECT_NE(md.find("| 0.6000 ± 0.0000 |"), std::string::npos) << md;
  EXPECT_NE(md.find("moe (4.5500) < dense (4.7000)"), std::string::npos) << md;
  EXPECT_NE(md.find("within their summed standard deviations"), std::string::npos) << md;
  EXPECT_NE(md.find("](experiments/moe-vs-dense.svg)"), std::string::npos);
}

TEST(Experiments, SectionReplacedInPlace) {
  const std::string doc0 = "# Experiments\n\nIntro.\n";
  const std::string doc1 = experiment_replace_section(doc0, "a", "first A\n");
  EXPECT_EQ(doc1, "# Experiments\n\nIntro.\n\n<!-- experiment:a -->\nfirst A\n<!-- /experiment:a -->\n");
  const std::string doc2 = experiment_replace_section(doc1 + "\n## Mine\nkept\n", "b", "B\n");
  const std::string doc3 = experiment_replace_section(doc2, "a", "second A\n");
  EXPECT_EQ(doc3.find("first A"), std::string::npos);
  EXPECT_NE(doc3.find("<!-- experiment:a -->\nsecond A\n<!-- /experiment:a -->\n\n## Mine\nkept\n"),
            std::string::npos) << doc3;
  EXPECT_NE(doc3.find("<!-- experiment:b -->\nB\n<!-- /experiment:b -->"), std::string::npos);
  EXPECT_EQ(doc3.find("Intro."), doc0.find("Intro."));
}

TEST(Experiments, JsonRoundTripAndErrors) {
  const ExpResult r = sample_result();
  const ExpResult b = experiment_from_json(experiment_to_json(r), "x.json");
  EXPECT_EQ(b.name, r.name);
  EXPECT_EQ(b.configs.size(), 2u);
  EXPECT_EQ(b.configs[1].size.params, 8000);
  EXPECT_EQ(b.configs[1].seeds[1].val_loss, r.configs[1].seeds[1].val_loss);
  EXPECT_TRUE(std::isnan(b.configs[1].seeds[0].max_logit));  // NaN is null in JSON
  EXPECT_EQ(experiment_markdown(b, "p.svg"), experiment_markdown(r, "p.svg"));
  auto err = [](const std::string& text) {
    try {
      experiment_from_json(text, "x.json");
    } catch (const MoeError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(err("[]"), "x.json: not a moe experiment file (field \"format\")");
  std::string t = experiment_to_json(r);
  t.replace(t.find("\"steps\""), 7, "\"stepz\"");
  EXPECT_EQ(err(t), "x.json: field \"steps\" is missing or has the wrong type");
}

// `moe eval --json` output (maybe after other lines) -> the MTP acceptance columns.
TEST(Experiments, ReadsEvalAcceptanceIntoTheTable) {
  ExpRunResult a, b;
  experiment_read_eval("loading\n{\n  \"mean_ce\": 4.5,\n  \"mtp_accept\": 0.25,\n"
                       "  \"mtp_draft_acc\": 0.125\n}\n", "e.log", &a);
  EXPECT_DOUBLE_EQ(a.mtp_accept, 0.25);
  EXPECT_DOUBLE_EQ(a.mtp_draft_acc, 0.125);
  experiment_read_eval("{\n  \"mean_ce\": 4.5\n}\n", "e.log", &b);  // no MTP modules
  EXPECT_TRUE(std::isnan(b.mtp_accept));
  EXPECT_THROW(experiment_read_eval("error: something\n", "e.log", &b), MoeError);
  EXPECT_THROW(experiment_read_eval("{\n  \"mean_ce\": 4.5, \"mtp_accept\": \"x\"\n}\n", "e.log",
                                    &b), MoeError);
  ExpResult r = sample_result();
  r.metrics = EXP_METRIC_ACCEPT;
  r.configs[1].seeds[0].mtp_accept = 0.5;
  r.configs[1].seeds[1].mtp_accept = 0.7;
  const std::string md = experiment_markdown(r, "p.svg");
  EXPECT_NE(md.find("| MTP acceptance | MTP draft accuracy |"), std::string::npos) << md;
  // 50% and 70%: 60.0 ± 14.1; no draft accuracy, and none for dense
  EXPECT_NE(md.find("| 60.0 ± 14.1% | - |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 4.7000 ± 0.1414 | - | - |"), std::string::npos) << md;
  const ExpResult back = experiment_from_json(experiment_to_json(r), "x.json");
  EXPECT_DOUBLE_EQ(back.configs[1].seeds[1].mtp_accept, 0.7);
  EXPECT_TRUE(std::isnan(back.configs[0].seeds[0].mtp_accept));
}

TEST(Experiments, SvgAndPageDrawEveryConfiguration) {
  const ExpResult r = sample_result();
  const std::string svg = experiment_svg(r);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<style><![CDATA["), std::string::npos);
  EXPECT_NE(svg.find(">dense<"), std::string::npos);
  EXPECT_NE(svg.find(">moe<"), std::string::npos);
  const std::string html = experiments_html({r});
  EXPECT_NE(html.find("id=\"moe-vs-dense\""), std::string::npos);
  EXPECT_NE(html.find("MoE wins &lt;sometimes&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(html.find("<sometimes>"), std::string::npos);
  EXPECT_NE(html.find("<td>4.5500 ± 0.0707</td>"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  // Seven long names do not fit one legend row inside the plot: rows above it, a taller chart.
  ExpResult many = r;
  for (int i = 0; i < 5; ++i) {
    many.configs.push_back(r.configs[1]);
    many.configs.back().name = "configuration with a long name number " + std::to_string(i);
  }
  const std::string tall = experiment_svg(many);
  EXPECT_NE(svg.find("height=\"320\""), std::string::npos);  // two names fit inside the plot
  EXPECT_EQ(tall.find("height=\"320\""), std::string::npos);
  for (const ExpConfigResult& c : many.configs) EXPECT_NE(tall.find(">" + c.name + "<"), std::string::npos);
}

// Parameters and FLOPs of a tiny model, counted by hand: vocab 100, d 8, 1 layer, 2 heads of 4,
// no q/k norm, 4 experts of width 6, top-2.
TEST(Experiments, SizeOfATinyModel) {
  TrainArgs a;
  a.layers = 1, a.d_model = 8, a.heads = 2, a.experts = 4, a.top_k = 2, a.expert_ffn = 6;
  a.qk_norm = "none";
  const ModelConfig c = train_model_config(a, 100, 0);
  const ExpSize z = experiment_size(c, 15);
  const int64_t embed = 100 * 8, head = 100 * 8, final_norm = 8;
  const int64_t norms = 2 * 8, attn = 4 * 8 * 8, router = 4 * 8, expert = 3 * 6 * 8;
  EXPECT_EQ(z.params, embed + head + final_norm + norms + attn + router + 4 * expert);
  EXPECT_EQ(z.active, z.params - 2 * expert);
  EXPECT_DOUBLE_EQ(z.flops, 2.0 * static_cast<double>(z.active - embed) + 2.0 * 1 * 2 * 4 * 16);
  a.experts = 1;
  const ExpSize d = experiment_size(train_model_config(a, 100, 0), 15);
  EXPECT_EQ(d.params, embed + head + final_norm + norms + attn + expert);  // dense FFN of width 6
  EXPECT_EQ(d.active, d.params);
}

}  // namespace
}  // namespace moe
