// `moe inspect --data --report` end to end: a tiny MoE trained on a miniature Brown-format corpus
// (word/tag text and cats.txt), then routed over its validation tokens with labels, compared with
// an earlier snapshot, and written as JSON and a self-contained HTML report.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "analysis/inspect_routing.h"
#include "test_util.h"

namespace moe {
namespace {

// Two genres with different vocabularies, each word tagged.
std::string make_brown() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = moe_test::make_temp_dir("brown");
  const char* news[] = {"the/at", "jury/nn", "said/vbd", "city/nn", "election/nn", "of/in",
                        "a/at",   "new/jj",  "vote/nn",  "was/bedz", "held/vbn",   "in/in"};
  const char* fiction[] = {"she/pps", "ran/vbd", "to/in",    "the/at",  "old/jj",  "house/nn",
                           "and/cc",  "he/pps",  "smiled/vbd", "at/in", "her/ppo", "dark/jj"};
  std::ofstream cats(dir + "/cats.txt");
  const char* names[] = {"ca01", "ca02", "ca03", "cn01", "cn02", "cn03"};
  for (int d = 0; d < 6; ++d) {
    const bool is_news = d < 3;
    // A pointer, not `(is_news ? news : fiction)[i]`: g++ 12 with -fsanitize=undefined miscompiles
    // indexing a conditional of two arrays (it always reads one element).
    const char* const* words = is_news ? news : fiction;
    cats << names[d] << (is_news ? " news\n" : " fiction\n");
    std::ofstream f(dir + "/" + names[d]);
    uint32_t x = 777 + d;
    for (int s = 0; s < 120; ++s) {
      f << "\n\n\t";
      for (int w = 0; w < 10; ++w) {
        x = x * 1103515245u + 12345u;
        f << words[(x >> 16) % 12] << " ";
      }
      f << "./.\n";
    }
  }
  return dir;
}

using moe_test::slurp;

const std::string kSmall =
    " --vocab 300 --layers 2 --d-model 32 --heads 2 --experts 4 --top-k 2 --expert-ffn 32"
    " --batch 4 --seq 32 --threads 1 --eval-every 4 --eval-windows 2 --warmup 2 --lr 0.01 --quiet";

std::string trained_run() {
  static std::string out;
  if (!out.empty()) return out;
  out = moe_test::make_temp_dir("inspect_run");
  auto r = moe_test::run_moe("train --data " + make_brown() + " --out " + out +
                             " --steps 8 --snapshot-every 4" + kSmall);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

TEST(InspectReport, DataReportJsonAndText) {
  const std::string run = trained_run();
  ASSERT_TRUE(std::filesystem::exists(run + "/snapshots/step-4/model.safetensors"));
  const std::string html = run + "/report.html";
  auto r = moe_test::run_moe("inspect --model " + run + " --data " + run + "/data --report " + html +
                             " --compare " + run + "/snapshots/step-4 --tokens 2000 --window 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Terminal summary: one row per MoE layer, then the specialisation per expert.
  EXPECT_NE(r.out.find("layer   gini"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Cramer's V pos"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("report: " + html), std::string::npos) << r.err;

  const auto j = nlohmann::json::parse(slurp(run + "/report.json"));
  EXPECT_EQ(j["tokens"].get<int>(), 2000);
  ASSERT_EQ(j["layers"].size(), 2u);
  for (const auto& l : j["layers"]) {
    double total = 0;
    for (double v : l["load"]) total += v;
    EXPECT_EQ(total, 2000.0 * 2);  // every token's two choices
    const double g = l["stats"]["gini"], h = l["stats"]["entropy_norm"];
    EXPECT_GE(g, 0.0);
    EXPECT_LE(g, 0.75);
    EXPECT_GT(h, 0.0);
    EXPECT_LE(h, 1.0 + 1e-12);
    const double rate = l["dropped"]["rate"];
    EXPECT_GE(rate, 0.0);
    EXPECT_LT(rate, 1.0);
    const double jp = l["consistency"]["perturbed"]["mean_jaccard"];
    const double jc = l["consistency"]["checkpoint"]["mean_jaccard"];
    EXPECT_GT(jp, 0.0);
    EXPECT_LE(jp, 1.0);
    EXPECT_GE(jc, 0.0);
    EXPECT_LE(jc, 1.0);
    // A tiny perturbation changes fewer routes than 4 more training steps at lr 0.01.
    EXPECT_GE(jp, jc);
    ASSERT_TRUE(l["specialisation"].contains("pos"));
    ASSERT_TRUE(l["specialisation"].contains("genre"));
    ASSERT_TRUE(l["specialisation"].contains("tokens"));
    EXPECT_EQ(l["specialisation"]["genre"]["top_labels_per_expert"].size(), 4u);
  }
  // The report: self-contained, every section with data.
  const std::string page = slurp(html);
  // tests/report_browser_test.sh renders this report in headless Chromium.
  if (const char* keep = std::getenv("MOE_INSPECT_REPORT_OUT"))
    std::filesystem::copy_file(html, keep, std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("src=\"http"), std::string::npos);
  EXPECT_EQ(page.find("href=\"http"), std::string::npos);
  EXPECT_EQ(page.find("No labelled tokens were routed"), std::string::npos);
  EXPECT_EQ(page.find("No sample text"), std::string::npos);
  EXPECT_EQ(page.find("No per-layer summary"), std::string::npos);
  for (const char* id : {"id=\"loss\"", "id=\"balance\"", "id=\"load\"", "id=\"pos\"",
                         "id=\"genre\"", "id=\"tokens\"", "id=\"sample\"", "Consistency (other ckpt)",
                         "Tokens per expert, layer 1"})
    EXPECT_NE(page.find(id), std::string::npos) << id;
}

TEST(InspectReport, IdenticalRunsAgreeAndPerturbationIsDeterministic) {
  const std::string run = trained_run();
  Model m;
  model_load(&m, run);
  Tokenizer tok;
  tokenizer_load(&tok, run + "/tokenizer.json");
  InspectData d;
  inspect_data_load(&d, run + "/data", tok, 500);
  ASSERT_EQ(d.ids.size(), 500u);
  ASSERT_EQ(d.pos.size(), 500u);
  const auto a = collect_routing(m, d.ids, 50);
  const auto b = collect_routing(m, d.ids, 50);
  const auto p1 = collect_routing(m, d.ids, 50, 0.05f, 3);
  const auto p2 = collect_routing(m, d.ids, 50, 0.05f, 3);
  ASSERT_EQ(a.size(), 2u);
  for (size_t l = 0; l < a.size(); ++l) {
    EXPECT_EQ(routing_consistency(a[l].topk, b[l].topk).mean_jaccard, 1.0);
    EXPECT_EQ(p1[l].topk.expert, p2[l].topk.expert);
  }
}

TEST(InspectReport, BadInputIsAOneLineError) {
  const std::string run = trained_run();
  auto r = moe_test::run_moe("inspect --model " + run + " --data /nonexistent/file.txt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("/nonexistent/file.txt"), std::string::npos) << r.err;
  r = moe_test::run_moe("inspect --model " + run + " --data " + run + "/data --window 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--window"), std::string::npos) << r.err;
  const std::string other = moe_test::make_temp_dir("inspect_other");
  r = moe_test::run_moe("train --data " + make_brown() + " --out " + other + " --steps 1" +
                        kSmall + " --experts 2 --top-k 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = moe_test::run_moe("inspect --model " + run + " --data " + run + "/data --compare " + other);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--compare"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moe
