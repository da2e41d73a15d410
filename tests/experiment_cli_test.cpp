// `moe experiment` end to end on a small generated corpus (a few steps, so it takes seconds): it
// completes and writes its table, plot, raw numbers and page; a rerun replaces its section in
// place; bad names, flags and corpora are one-line errors. The numbers themselves are not tested.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "train_test_util.h"

namespace moe {
namespace {

using moe_test::run_moe;
using moe_test::slurp;

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

bool one_line(const std::string& err) {
  return !err.empty() && err.find('\n') == err.size() - 1 && err.rfind("moe: error: ", 0) == 0;
}

TEST(ExperimentCli, MoeVsDenseQuickWritesTableAndJson) {
  const std::string out = moe_test::make_temp_dir("experiment");
  const std::string cmd = "experiment moe-vs-dense --quick --steps 3 --seeds 2 --threads 1 --data " +
                          moe_test::word_corpus() + " --out " + out + "/runs --docs " + out + "/docs";
  const auto r = run_moe(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const std::string md = slurp(out + "/docs/experiments.md");
  EXPECT_NE(md.find("| configuration | parameters | active | forward FLOPs / token |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("**Quick mode**"), std::string::npos);
  for (const char* name : {"dense, FFN 512 (equal active)", "8 x 256 top-2, renormalised"}) {
    EXPECT_NE(md.find("| " + std::string(name) + " |"), std::string::npos) << name;
    EXPECT_NE(r.out.find(name), std::string::npos) << r.out;  // printed with its sizes
  }
  EXPECT_NE(r.out.find("FLOPs/token"), std::string::npos);
  const auto j = nlohmann::json::parse(slurp(out + "/runs/moe-vs-dense.json"));
  ASSERT_EQ(j["configs"].size(), 7u);
  for (const auto& c : j["configs"]) {
    EXPECT_EQ(c["seeds"].size(), 2u);
    EXPECT_GT(c["params"].get<int64_t>(), 0);
  }
  EXPECT_EQ(slurp(out + "/docs/experiments/moe-vs-dense.json"), slurp(out + "/runs/moe-vs-dense.json"));
  EXPECT_NE(slurp(out + "/docs/experiments/moe-vs-dense.svg").find("<svg"), std::string::npos);
  EXPECT_NE(slurp(out + "/runs/experiments.html").find("id=\"moe-vs-dense\""), std::string::npos);

  // A rerun (runs reused) replaces the section in place and keeps what else the file holds.
  std::ofstream(out + "/docs/experiments.md", std::ios::app) << "\n## Notes by hand\nkept\n";
  const auto r2 = run_moe(cmd);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  const std::string md2 = slurp(out + "/docs/experiments.md");
  EXPECT_EQ(count(md2, "<!-- experiment:moe-vs-dense -->"), 1u);
  EXPECT_EQ(count(md2, "| configuration |"), 1u);
  EXPECT_NE(md2.find("## Notes by hand\nkept\n"), std::string::npos);

  // The routing report of one of the runs links the experiments page drawn from the numbers.
  const auto r3 = run_moe("inspect --model " + out + "/runs/moe-vs-dense/seed-1/run-4 --report " +
                          out + "/report.html --experiments " + out + "/docs/experiments");
  ASSERT_EQ(r3.exit_code, 0) << r3.err;
  EXPECT_NE(slurp(out + "/report.html").find("<a href=\"experiments.html\">Experiments</a>"),
            std::string::npos);
  const std::string page = slurp(out + "/experiments.html");
  EXPECT_NE(page.find("id=\"moe-vs-dense\""), std::string::npos);
  EXPECT_NE(page.find("<td>8 x 256 top-2, renormalised</td>"), std::string::npos);
  const auto r4 = run_moe("inspect --model " + out + "/runs/moe-vs-dense/seed-1/run-4 --report " +
                          out + "/report.html --experiments " + out + "/runs/moe-vs-dense");
  EXPECT_NE(r4.exit_code, 0);
  EXPECT_TRUE(one_line(r4.err)) << r4.err;
}

TEST(ExperimentCli, BadNameFlagOrCorpusIsAOneLineError) {
  const std::string out = moe_test::make_temp_dir("experiment_bad");
  auto r = run_moe("experiment nope --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("'nope'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("moe-vs-dense"), std::string::npos) << r.err;
  r = run_moe("experiment moe-vs-dense --bogus --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find("--bogus"), std::string::npos) << r.err;
  r = run_moe("experiment moe-vs-dense --seeds 0 --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  r = run_moe("experiment moe-vs-dense --data " + out + "/missing --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_NE(r.err.find(out + "/missing"), std::string::npos) << r.err;
  r = run_moe("experiment");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(one_line(r.err)) << r.err;
}

}  // namespace
}  // namespace moe
