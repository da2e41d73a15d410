// A corpus of one document validates on the held-out tail of that document, never on text it
// trains on.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"
#include "text/tokenizer.h"
#include "train/dataset.h"

namespace moe {
namespace {

std::string shard_text(const Shard& s, const Tokenizer& tok) {
  std::vector<int32_t> ids(s.n);
  for (int64_t i = 0; i < s.n; ++i) ids[i] = s.token(i);
  return tokenizer_decode(tok, ids, true);
}

TEST(DatasetHoldout, OneDocumentValidatesOnItsHeldOutTail) {
  const std::string dir = moe_test::make_temp_dir("holdout");
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i) + " of the only document.\n";
  std::ofstream(dir + "/book.txt") << text;
  PrepareParams p;
  p.vocab_size = 300;
  dataset_prepare(dir + "/book.txt", dir + "/data", p);
  Dataset d;
  dataset_open(&d, dir + "/data");
  Tokenizer tok;
  tokenizer_load(&tok, dir + "/data/tokenizer.json");
  const std::string train = shard_text(d.train, tok), val = shard_text(d.val, tok);
  ASSERT_FALSE(val.empty());
  // The two shards split the document: train is a prefix, validation the rest, no line in both.
  EXPECT_EQ(train + val, text);
  EXPECT_EQ(val.front(), 'l');  // cut at a line boundary
  EXPECT_EQ(train.find(val.substr(0, val.find('\n') + 1)), std::string::npos);
  EXPECT_GE(val.size(), text.size() / 20);  // at least val_fraction (5%) of the bytes
  EXPECT_LE(val.size(), text.size() / 2);
  const auto meta = nlohmann::json::parse(moe_test::slurp(dir + "/data/meta.json"));
  EXPECT_NE(meta["validation"].get<std::string>().find("held-out tail"), std::string::npos);
}

}  // namespace
}  // namespace moe
